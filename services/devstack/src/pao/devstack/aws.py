"""The embedded AWS: moto's server on a free loopback port, checking signatures and IAM policies.

moto speaks the real wire protocols of STS, SSM, IAM, S3, SQS and the rest. Started with
`INITIAL_NO_AUTH_ACTION_COUNT=n`, it answers its first n calls without looking at credentials,
then checks every call's SigV4 signature against the access keys it knows and its action against
their IAM policies. `bootstrap` spends exactly those n calls creating the stack's own identity
(a user with an access key, and a role to assume per environment, as production assumes one per
account), so nothing after it goes unchecked. moto keeps nothing across restarts: each start
bootstraps again and writes a new key.
"""

from __future__ import annotations

import asyncio
import configparser
import io
import json
import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess

PROVISIONER_USER = "pao-provisioner"
PROVISIONING_ROLE = "pao-provisioning"

#: The calls `bootstrap` makes before moto starts checking credentials.
BOOTSTRAP_CALLS = 5

_ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)

#: Variables that would take precedence over the credentials file in botocore's chain.
_SHADOWING = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


@dataclass(frozen=True)
class AwsIdentity:
    """What the bootstrap made. The secret key lives only in `credentials_file`."""

    endpoint_url: str
    region: str
    account_id: str
    access_key_id: str
    role_arn: str
    credentials_file: Path
    config_file: Path

    def session(self) -> Any:
        """A boto3 session that signs with the bootstrapped key."""
        return key_session(self.credentials_file)

    def environ(self) -> dict[str, str]:
        """Variables that point botocore's standard chain at these files and this endpoint."""
        return {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_CONFIG_FILE": str(self.config_file),
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }


def use_identity(identity: AwsIdentity, environ: MutableMapping[str, str]) -> None:
    """Make `environ` (a process's, usually) reach moto with the bootstrapped key, and only
    with it: keys or profiles already there would win over the file and are never meant for a
    local stand-in."""
    for name in _SHADOWING:
        environ.pop(name, None)
    environ.update(identity.environ())


class EmbeddedAws:
    """moto_server on a free loopback port; with `check_auth`, signatures and IAM policies are
    enforced once `bootstrap` has run."""

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        region: str = "us-east-1",
        check_auth: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.region = region
        self.check_auth = check_auth
        env = dict(os.environ)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        if check_auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_CALLS)
        self._child = ChildProcess(
            "moto",
            [
                sys.executable,
                "-m",
                "pao.devstack.moto_server",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            log_path=log_dir / "moto.log",
            env=env,
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child.process else None

    async def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait until `GET /moto-api/` answers (it is not an AWS call, so
        it does not use up an unchecked one)."""
        self._child.start()
        await self._child.answering(f"{self.endpoint_url}/moto-api/", timeout)
        return self.endpoint_url

    async def bootstrap(self, directory: Path) -> AwsIdentity:
        """Create the provisioner user, its key and the provisioning role; write the key to
        `directory/credentials` and the region and endpoint to `directory/config`."""
        return await asyncio.to_thread(_bootstrap, self.endpoint_url, self.region, directory)

    async def seed_platform(self, identity: AwsIdentity, environments: Sequence[str]) -> None:
        """What the catalog's items build on and a platform team would have made first: one
        shared EKS cluster per environment (`platform-<environment>`)."""
        await asyncio.to_thread(_seed_platform, identity, tuple(environments))

    async def stop(self) -> None:
        await self._child.stop()


def shared_cluster(environment: str) -> str:
    """The name of an environment's shared EKS cluster."""
    return f"platform-{environment}"


def key_session(credentials_file: Path) -> Any:
    """A boto3 session signing with the key a stack's credentials file holds (its `default`)."""
    import boto3

    credentials = configparser.ConfigParser()
    credentials.read(credentials_file, encoding="utf-8")
    return boto3.session.Session(
        aws_access_key_id=credentials["default"]["aws_access_key_id"],
        aws_secret_access_key=credentials["default"]["aws_secret_access_key"],
    )


def _seed_platform(identity: AwsIdentity, environments: tuple[str, ...]) -> None:
    eks = identity.session().client(
        "eks", endpoint_url=identity.endpoint_url, region_name=identity.region
    )
    for environment in environments:
        eks.create_cluster(
            name=shared_cluster(environment),
            roleArn=identity.role_arn,
            resourcesVpcConfig={"subnetIds": [f"subnet-{environment}-{z}" for z in "ab"]},
            tags={"pao:shared": "true", "environment": environment},
        )


def _bootstrap(endpoint_url: str, region: str, directory: Path) -> AwsIdentity:
    import boto3
    from botocore.config import Config

    # moto routes a call by the service its signature names, so the unchecked calls are signed
    # too, with a key that exists nowhere. Never retried: each uses up exactly one.
    unchecked = boto3.session.Session(
        aws_access_key_id="pao-bootstrap",
        aws_secret_access_key="pao-bootstrap",  # noqa: S106 - a placeholder, never checked
    )
    iam = unchecked.client(
        "iam",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(retries={"total_max_attempts": 1}),
    )
    user = iam.create_user(UserName=PROVISIONER_USER)["User"]
    iam.put_user_policy(
        UserName=PROVISIONER_USER, PolicyName="pao-provisioner", PolicyDocument=_ALLOW_ALL
    )
    key = iam.create_access_key(UserName=PROVISIONER_USER)["AccessKey"]
    account_id = user["Arn"].split(":")[4]
    # The account may assume the role, as across accounts in production. moto compares trust
    # principals literally (it does not expand an account's root), so the user is named too.
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{account_id}:root", user["Arn"]]},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=PROVISIONING_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=PROVISIONING_ROLE, PolicyName="pao-provisioning", PolicyDocument=_ALLOW_ALL
    )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    credentials_file = directory / "credentials"
    config_file = directory / "config"
    _write_private(
        credentials_file,
        _ini(
            {
                "default": {
                    "aws_access_key_id": key["AccessKeyId"],
                    "aws_secret_access_key": key["SecretAccessKey"],
                }
            }
        ),
    )
    _write_private(config_file, _ini({"default": {"region": region, "endpoint_url": endpoint_url}}))
    # The first checked call: the new key must be accepted, and says which account it is in.
    sts = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    ).client("sts", endpoint_url=endpoint_url, region_name=region)
    account_id = sts.get_caller_identity()["Account"]
    return AwsIdentity(
        endpoint_url=endpoint_url,
        region=region,
        account_id=account_id,
        access_key_id=key["AccessKeyId"],
        role_arn=role["Role"]["Arn"],
        credentials_file=credentials_file,
        config_file=config_file,
    )


def _ini(sections: dict[str, dict[str, Any]]) -> str:
    parser = configparser.ConfigParser()
    parser.read_dict(sections)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any earlier one in one step."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
    tmp.replace(path)
