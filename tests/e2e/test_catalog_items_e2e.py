"""Every automated item of the catalog through `pao up` and devctl: it is requested, completes,
what it promises exists in AWS (moto, SigV4-checked, read back with boto3), and its
decommission removes it again. The catalog's own integration script passes against the stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from botocore.exceptions import ClientError

from conftest import BIN, REPO
from pao.devstack.aws import key_session
from support.upstack import Person, UpStack, pao_up

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SECURITY = Person(
    "security", "sam", ("team-security",), "PAOSECURITYKEY000001", "security-secret-for-tests"
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UpStack]:
    async with pao_up(tmp_path_factory.mktemp("pao-items"), people=(SECURITY,)) as up:
        yield up


def aws(stack: UpStack, service: str) -> Any:
    """A boto3 client of the stack's AWS, with the credentials `pao up` made for PAO."""
    credentials_file = stack.info["components"]["aws"]["credentials_file"]
    return key_session(Path(credentials_file)).client(
        service, endpoint_url=stack.info["aws"], region_name="us-east-1"
    )


def missing(call: Callable[[], Any], *codes: str) -> bool:
    """True when the call fails with one of the error codes that mean 'no such thing'."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] in codes
    return False


@dataclass(frozen=True)
class Case:
    item: str
    inputs: Callable[[str], dict[str, Any]]
    #: what exists after the create (asserts), given the suffix and the resource's outputs
    made: Callable[[UpStack, str, dict[str, Any]], None]
    #: True once it is gone, given the suffix and the outputs the create recorded
    gone: Callable[[UpStack, str, dict[str, Any]], bool]


def _parameter_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    found = aws(stack, "ssm").get_parameter(Name=f"/app{s}/dev/flags")["Parameter"]
    assert (found["Type"], found["Value"]) == ("String", "checkout=on")
    tags = aws(stack, "ssm").list_tags_for_resource(
        ResourceType="Parameter", ResourceId=f"/app{s}/dev/flags"
    )["TagList"]
    assert {"Key": "application", "Value": f"app{s}"} in tags
    assert outputs["put_parameter"]["version"] == 1


def _secure_parameter_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    described = aws(stack, "ssm").describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [f"/app{s}/prod/api_key"]}]
    )["Parameters"]
    assert [(p["Type"], p["KeyId"]) for p in described] == [("SecureString", f"alias/app{s}")]


def _bucket_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    s3 = aws(stack, "s3")
    bucket = f"app{s}-assets-dev"
    s3.head_bucket(Bucket=bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()), block


def _queue_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    sqs = aws(stack, "sqs")
    url = sqs.get_queue_url(QueueName=f"app{s}-jobs-dev.fifo")["QueueUrl"]
    assert outputs["create_queue"]["queue_url"] == url
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["FifoQueue"] == "true"
    assert attributes["VisibilityTimeout"] == "45"
    assert outputs["queue_arn"]["queue_arn"] == attributes["QueueArn"]


def _topic_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    sns = aws(stack, "sns")
    arn = outputs["create_topic"]["topic_arn"]
    assert arn.endswith(f":app{s}-events-dev")
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "Orders"
    endpoints = [
        x["Endpoint"] for x in sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    ]
    assert endpoints == ["team@example.com"]


def _role_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    iam = aws(stack, "iam")
    role = iam.get_role(RoleName=f"app{s}-dev")["Role"]
    assert role["Arn"] == outputs["create_role"]["role_arn"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    policy = iam.get_role_policy(RoleName=f"app{s}-dev", PolicyName="application-access")
    actions = [a for st in policy["PolicyDocument"]["Statement"] for a in st["Action"]]
    assert "s3:PutObject" in actions


def _log_group_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    logs = aws(stack, "logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/pao/app{s}/dev")["logGroups"]
    assert [(g["logGroupName"], g["retentionInDays"]) for g in groups] == [(f"/pao/app{s}/dev", 14)]
    filters = logs.describe_metric_filters(logGroupName=f"/pao/app{s}/dev")["metricFilters"]
    assert [f["filterName"] for f in filters] == ["errors"]


def _zone_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    route53 = aws(stack, "route53")
    zone_id = outputs["create_zone"]["zone_id"]
    zone = route53.get_hosted_zone(Id=zone_id)["HostedZone"]
    assert zone["Name"] == f"app{s}.dev.internal.example.com."
    records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    assert ("CNAME", f"api.app{s}.dev.internal.example.com.") in [
        (r["Type"], r["Name"]) for r in records
    ]


def _repository_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    ecr = aws(stack, "ecr")
    found = ecr.describe_repositories(repositoryNames=[f"app{s}/api"])["repositories"]
    assert found[0]["repositoryUri"] == outputs["create_repository"]["repository_uri"]
    assert found[0]["imageScanningConfiguration"] == {"scanOnPush": True}
    assert ecr.get_lifecycle_policy(repositoryName=f"app{s}/api")["lifecyclePolicyText"]


def _eks_made(stack: UpStack, s: str, outputs: dict[str, Any]) -> None:
    profile = aws(stack, "eks").describe_fargate_profile(
        clusterName="platform-dev", fargateProfileName=f"app{s}"
    )["fargateProfile"]
    assert profile["status"] == "ACTIVE"
    assert profile["selectors"] == [{"namespace": f"app{s}"}]
    assert profile["podExecutionRoleArn"] == outputs["pod_role"]["role_arn"]
    assert outputs["fargate_profile"]["status"] == "ACTIVE"


CASES = [
    Case(
        "parameterstore-standard",
        lambda s: {
            "application": f"app{s}",
            "environment": "dev",
            "parameter_name": "flags",
            "parameter_type": "String",
            "value": "checkout=on",
        },
        _parameter_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "ssm").get_parameter(Name=f"/app{s}/dev/flags"),
            "ParameterNotFound",
        ),
    ),
    Case(
        "parameterstore-standard",
        lambda s: {
            "application": f"app{s}",
            "environment": "prod",
            "parameter_name": "api_key",
            "parameter_type": "SecureString",
            "kms_key_alias": f"alias/app{s}",
        },
        _secure_parameter_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "ssm").get_parameter(Name=f"/app{s}/prod/api_key"),
            "ParameterNotFound",
        ),
    ),
    Case(
        "s3-bucket",
        lambda s: {
            "application": f"app{s}",
            "purpose": "assets",
            "environment": "dev",
            "versioning": True,
            "cost_center": "CC-1234",
        },
        _bucket_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "s3").head_bucket(Bucket=f"app{s}-assets-dev"), "404", "NoSuchBucket"
        ),
    ),
    Case(
        "sqs-queue",
        lambda s: {
            "application": f"app{s}",
            "queue": "jobs",
            "environment": "dev",
            "fifo": True,
            "visibility_timeout_seconds": 45,
        },
        _queue_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "sqs").get_queue_url(QueueName=f"app{s}-jobs-dev.fifo"),
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ),
    ),
    Case(
        "sns-topic",
        lambda s: {
            "application": f"app{s}",
            "topic": "events",
            "environment": "dev",
            "display_name": "Orders",
            "email_subscription": True,
            "subscriber_email": "team@example.com",
        },
        _topic_made,
        lambda stack, s, outputs: missing(
            lambda: aws(stack, "sns").get_topic_attributes(
                TopicArn=outputs["create_topic"]["topic_arn"]
            ),
            "NotFound",
        ),
    ),
    Case(
        "iam-role",
        lambda s: {
            "application": f"app{s}",
            "environment": "dev",
            "assumed_by": "lambda",
            "s3_access": "read-write",
        },
        _role_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "iam").get_role(RoleName=f"app{s}-dev"), "NoSuchEntity"
        ),
    ),
    Case(
        "log-group",
        lambda s: {
            "application": f"app{s}",
            "environment": "dev",
            "retention_days": 14,
            "error_metric": True,
        },
        _log_group_made,
        lambda stack, s, _: (
            not aws(stack, "logs").describe_log_groups(logGroupNamePrefix=f"/pao/app{s}/dev")[
                "logGroups"
            ]
        ),
    ),
    Case(
        "dns-zone",
        lambda s: {
            "application": f"app{s}",
            "environment": "dev",
            "first_record": True,
            "record_name": "api",
            "record_target": "lb.example.com",
        },
        _zone_made,
        lambda stack, s, outputs: missing(
            lambda: aws(stack, "route53").get_hosted_zone(Id=outputs["create_zone"]["zone_id"]),
            "NoSuchHostedZone",
        ),
    ),
    Case(
        "ecr-repository",
        lambda s: {"application": f"app{s}", "image": "api", "environment": "dev"},
        _repository_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "ecr").describe_repositories(repositoryNames=[f"app{s}/api"]),
            "RepositoryNotFoundException",
        ),
    ),
    Case(
        "eks-application",
        lambda s: {
            "app_name": f"app{s}",
            "environment": "dev",
            "container_image": "registry.example.com/shop:1.0.0",
            "cost_center": "CC-0001",
        },
        _eks_made,
        lambda stack, s, _: missing(
            lambda: aws(stack, "eks").describe_fargate_profile(
                clusterName="platform-dev", fargateProfileName=f"app{s}"
            ),
            "ResourceNotFoundException",
        ),
    ),
]


async def run_case(stack: UpStack, case: Case, tmp: Path) -> None:
    """One item, end to end: requested, completed, made in AWS, decommissioned, gone."""

    def devctl_json(*args: str, profile: str = "local") -> Any:
        return asyncio.to_thread(stack.json, *args, profile=profile)

    tmp.mkdir()
    suffix = uuid.uuid4().hex[:6]
    inputs = tmp / "inputs.yaml"
    inputs.write_text(yaml.safe_dump(case.inputs(suffix)))
    submitted = await devctl_json("request", "submit", case.item, "--inputs", str(inputs))
    request_id = submitted["request_id"]
    reached = await stack.status(request_id, "completed", "awaiting_approval")
    if reached["status"] == "awaiting_approval":  # security approves parameters
        approved = await asyncio.to_thread(
            stack.devctl, "request", "approve", request_id, profile="security"
        )
        assert approved.returncode == 0, approved.stderr
        await stack.status(request_id, "completed")
    request = await devctl_json("request", "get", request_id)
    assert request["mode"] == "automated"
    resource = await devctl_json("resource", "get", request["resource_id"])
    assert resource["state"] == "active"
    outputs = resource["outputs"]
    await asyncio.to_thread(case.made, stack, suffix, outputs)

    gone = await devctl_json(
        "resource", "decommission", request["resource_id"], "--reason", "test over", "--yes",
        "--wait",
    )  # fmt: skip
    assert gone["status"] == "completed", f"{gone}\n{stack.log_tail()}"
    assert await asyncio.to_thread(case.gone, stack, suffix, outputs)
    final = await devctl_json("resource", "get", request["resource_id"])
    assert final["state"] == "decommissioned"


async def test_every_item_makes_what_it_promises_and_its_decommission_removes_it(
    stack: UpStack, tmp_path: Path
) -> None:
    """All the items at once, as a platform's users would request them: each case is reported
    on its own when it fails."""
    names = [f"{c.item}-{i}" for i, c in enumerate(CASES)]
    outcomes = await asyncio.gather(
        *(run_case(stack, case, tmp_path / name) for case, name in zip(CASES, names, strict=True)),
        return_exceptions=True,
    )
    failed = {n: o for n, o in zip(names, outcomes, strict=True) if isinstance(o, BaseException)}
    assert not failed, "\n\n".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed.items())


async def test_the_catalog_integration_script_passes_against_the_stack(stack: UpStack) -> None:
    env = {
        **stack.env,
        "PAO_PROFILE": "local",
        "PATH": f"{BIN}{os.pathsep}{stack.env.get('PATH', '')}",
    }
    done = subprocess.run(
        [str(REPO / "catalog" / "scripts" / "integration-test.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO / "catalog",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for item in {c.item for c in CASES}:
        assert f"served: {item}" in done.stdout
