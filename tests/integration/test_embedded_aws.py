"""The embedded AWS as `pao up` runs it: moto checks every signature after its bootstrap, PAO's
processes reach it through the standard credential chain, and each environment names the role."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from pao.devstack.aws import PROVISIONER_USER, AwsIdentity, use_identity
from pao.devstack.up import write_environments


@pytest.fixture
def chain(aws_stack: AwsIdentity, monkeypatch: pytest.MonkeyPatch) -> AwsIdentity:
    """This process's environment as `pao up` sets it, from a shell holding other AWS keys."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-real-secret")
    monkeypatch.setenv("AWS_PROFILE", "production")
    environ = dict(os.environ)
    use_identity(aws_stack, environ)
    for name in set(os.environ) - set(environ):
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return aws_stack


def denied(call) -> str:
    """The error of a refused call (moto answers JSON protocols with an XML error body, which
    botocore leaves in the message)."""
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    error = caught.value.response["Error"]
    return f"{error.get('Code')} {error.get('Message')}"


def test_the_credentials_file_is_private_and_in_the_standard_format(aws_stack: AwsIdentity):
    for path in (aws_stack.credentials_file, aws_stack.config_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    credentials = configparser.ConfigParser()
    credentials.read(aws_stack.credentials_file)
    assert credentials["default"]["aws_access_key_id"] == aws_stack.access_key_id
    assert credentials["default"]["aws_secret_access_key"]
    config = configparser.ConfigParser()
    config.read(aws_stack.config_file)
    assert dict(config["default"]) == {
        "region": aws_stack.region,
        "endpoint_url": aws_stack.endpoint_url,
    }


def test_the_standard_chain_reaches_moto_as_the_provisioner(chain: AwsIdentity):
    """No endpoint or key in the code: AWS_ENDPOINT_URL and the credentials file do it all."""
    identity = boto3.session.Session().client("sts", region_name=chain.region).get_caller_identity()

    assert identity["Arn"] == f"arn:aws:iam::{chain.account_id}:user/{PROVISIONER_USER}"
    assert identity["Account"] == chain.account_id == "123456789012"
    ssm = boto3.session.Session().client("ssm", region_name=chain.region)
    ssm.put_parameter(Name="/pao/tests/chain", Value="v", Type="SecureString", Overwrite=True)
    assert ssm.get_parameter(Name="/pao/tests/chain", WithDecryption=True)["Parameter"]["Value"]


def test_moto_refuses_a_wrong_secret_and_an_unknown_key(aws_stack: AwsIdentity):
    def ssm(key_id: str, secret: str):
        return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret).client(
            "ssm", region_name=aws_stack.region, endpoint_url=aws_stack.endpoint_url
        )

    wrong_secret = ssm(aws_stack.access_key_id, "not-the-secret")
    assert "SignatureDoesNotMatch" in denied(lambda: wrong_secret.get_parameter(Name="/pao/x"))
    unknown = ssm("testing", "testing")
    assert "InvalidClientTokenId" in denied(lambda: unknown.get_parameter(Name="/pao/x"))


def test_calls_without_a_body_are_checked_as_sent(chain: AwsIdentity):
    """GETs and DELETEs of REST-JSON and REST-XML APIs (EKS, Route 53) pass with the right key
    and fail with a wrong one, like the calls with a body."""
    eks = boto3.session.Session().client("eks", region_name=chain.region)
    eks.create_cluster(
        name="checked", roleArn=chain.role_arn, resourcesVpcConfig={"subnetIds": ["subnet-1"]}
    )
    assert eks.describe_cluster(name="checked")["cluster"]["name"] == "checked"
    route53 = boto3.session.Session().client("route53", region_name=chain.region)
    zone = route53.create_hosted_zone(Name="checked.example.com", CallerReference="checked")
    zone_id = zone["HostedZone"]["Id"]
    assert route53.get_hosted_zone(Id=zone_id)["HostedZone"]["Id"] == zone_id
    wrong = boto3.session.Session(
        aws_access_key_id=chain.access_key_id, aws_secret_access_key="not-the-secret"
    ).client("eks", region_name=chain.region)
    assert "SignatureDoesNotMatch" in denied(lambda: wrong.describe_cluster(name="checked"))
    route53.delete_hosted_zone(Id=zone_id)
    eks.delete_cluster(name="checked")


def test_the_provisioning_role_can_be_assumed_and_its_credentials_work(chain: AwsIdentity):
    sts = boto3.session.Session().client("sts", region_name=chain.region)
    assumed = sts.assume_role(RoleArn=chain.role_arn, RoleSessionName="pao-dev")["Credentials"]
    as_role = boto3.session.Session(
        aws_access_key_id=assumed["AccessKeyId"],
        aws_secret_access_key=assumed["SecretAccessKey"],
        aws_session_token=assumed["SessionToken"],
    )

    ssm = as_role.client("ssm", region_name=chain.region, endpoint_url=chain.endpoint_url)
    ssm.put_parameter(Name="/pao/tests/role", Value="r", Type="String", Overwrite=True)
    assert ssm.get_parameter(Name="/pao/tests/role")["Parameter"]["Value"] == "r"
    caller = as_role.client("sts", region_name=chain.region, endpoint_url=chain.endpoint_url)
    assert ":assumed-role/pao-provisioning/pao-dev" in caller.get_caller_identity()["Arn"]


def test_every_environment_names_the_region_account_role_and_reachable_hosts(
    aws_stack: AwsIdentity, tmp_path: Path
):
    path = write_environments(
        tmp_path,
        "postgresql://postgres@127.0.0.1:5432/postgres",
        aws_region="eu-west-1",
        aws=aws_stack,
        rest_allowed_hosts=["127.0.0.1:4566", "127.0.0.1:8090"],
    )

    environments = yaml.safe_load(path.read_text())
    assert set(environments) == {"dev", "staging", "prod"}
    for name, settings in environments.items():
        assert settings == {
            "eks_cluster": f"platform-{name}",
            "postgres_admin_url": "postgresql://postgres@127.0.0.1:5432/postgres",
            "aws_region": "eu-west-1",
            "aws_account_id": "123456789012",
            "aws_role_arn": "arn:aws:iam::123456789012:role/pao-provisioning",
            "rest_allowed_hosts": ["127.0.0.1:4566", "127.0.0.1:8090"],
        }
    without_aws = yaml.safe_load(
        write_environments(tmp_path, "postgresql://h/db", aws_region="us-east-1").read_text()
    )
    assert "aws_role_arn" not in without_aws["dev"]
    assert "rest_allowed_hosts" not in without_aws["dev"]
