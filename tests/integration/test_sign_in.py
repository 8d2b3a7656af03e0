"""Sign-in with AWS credentials: a GetCallerIdentity call signed by the caller, checked by STS
(moto, checking signatures as AWS does), mapped through `principals`, exchanged for a session
key; expired, replayed, tampered and foreign proofs refused with their own codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import botocore.auth
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from botocore.credentials import ReadOnlyCredentials

from conftest import TEST_KEY_ID, TEST_SECRET, signed_client
from pao.catalog.bootstrap import CatalogParts
from pao.devctl.errors import CliError
from pao.devctl.signin import make_proof
from pao.devstack.aws import PROVISIONER_USER, AwsIdentity
from pao.gateway.app import create_app
from pao.gateway.sessions import SessionKeys
from pao.shared.keystore import KeyEntry, KeyStore, PrincipalEntry
from pao.shared.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEVELOPERS = "pao-developers"
UNMAPPED = "pao-unmapped"


@dataclass
class SignInGateway:
    url: str
    aws: AwsIdentity
    developer: ReadOnlyCredentials  # an assumed pao-developers session
    unmapped: ReadOnlyCredentials  # an assumed role no principal names
    key_file: Path
    pool: asyncpg.Pool

    def info(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/v1/auth/sign-in").json()

    def post(self, proof: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/auth/sign-in", json=proof)


def _assumed(aws: AwsIdentity, role: str, session_name: str) -> ReadOnlyCredentials:
    """Temporary credentials of `role`, assumed with the bootstrapped key (via moto's STS)."""
    iam = aws.session().client("iam", endpoint_url=aws.endpoint_url, region_name=aws.region)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                # moto matches trust principals literally: the account, and the user itself.
                "Principal": {
                    "AWS": [
                        f"arn:aws:iam::{aws.account_id}:root",
                        f"arn:aws:iam::{aws.account_id}:user/{PROVISIONER_USER}",
                    ]
                },
                "Action": "sts:AssumeRole",
            }
        ],
    }
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    sts = aws.session().client("sts", endpoint_url=aws.endpoint_url, region_name=aws.region)
    c = sts.assume_role(
        RoleArn=f"arn:aws:iam::{aws.account_id}:role/{role}", RoleSessionName=session_name
    )["Credentials"]
    return ReadOnlyCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])


def _keys(aws: AwsIdentity) -> KeyStore:
    return KeyStore(
        [KeyEntry(access_key_id=TEST_KEY_ID, secret_access_key=TEST_SECRET, user="dana")],
        [
            PrincipalEntry(
                account=aws.account_id,
                role=DEVELOPERS,
                user="erin",
                teams=("payments",),
                roles=("developer",),
            )
        ],
    )


@contextlib.asynccontextmanager
async def _serve(settings: Settings, keys: KeyStore, pool: asyncpg.Pool, parts: CatalogParts):
    app = create_app(settings, keys=keys, pool=pool, catalog_parts=parts)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def signin(
    settings: Settings,
    pool: asyncpg.Pool,
    catalog_parts: CatalogParts,
    aws_stack: AwsIdentity,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SignInGateway]:
    key_file = tmp_path_factory.mktemp("sessions") / "session-signing.key"
    own = settings.model_copy(
        update={"aws_endpoint_url": aws_stack.endpoint_url, "session_key_file": key_file}
    )
    developer = await asyncio.to_thread(_assumed, aws_stack, DEVELOPERS, "erin-laptop")
    unmapped = await asyncio.to_thread(_assumed, aws_stack, UNMAPPED, "someone")
    async with _serve(own, _keys(aws_stack), pool, catalog_parts) as url:
        yield SignInGateway(url, aws_stack, developer, unmapped, key_file, pool)


def _whoami(url: str, credentials: ReadOnlyCredentials) -> dict[str, Any]:
    client = signed_client(url, credentials.access_key, credentials.secret_key)
    try:
        return client.request("GET", "/auth/whoami")
    finally:
        client.close()


def _error(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


async def test_a_signed_in_role_gets_a_session_key_that_signs_as_its_mapped_user(
    signin: SignInGateway,
) -> None:
    info = await asyncio.to_thread(signin.info)
    assert info["sts_endpoint_url"] == signin.aws.endpoint_url.rstrip("/")
    assert info["audience"] == signin.url.removeprefix("http://")

    answer = await asyncio.to_thread(signin.post, make_proof(signin.developer, info))
    assert answer.status_code == 201, answer.text
    session = answer.json()
    assert session["user"] == "erin"
    assert session["principal_arn"] == (
        f"arn:aws:sts::{signin.aws.account_id}:assumed-role/{DEVELOPERS}/erin-laptop"
    )
    expires = datetime.fromisoformat(session["expires_at"])
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)

    me = await asyncio.to_thread(
        _whoami,
        signin.url,
        ReadOnlyCredentials(session["access_key_id"], session["secret_access_key"], None),
    )
    assert me["user"] == "erin"
    assert me["teams"] == ["payments"]
    assert me["roles"] == ["developer"]
    assert me["session"] == "erin-laptop"  # recorded, never the user
    assert me["access_key_id"] == session["access_key_id"]

    # Nothing stored holds the secret: the session's row names who and until when only.
    row = await signin.pool.fetchrow(
        "SELECT * FROM auth_sessions WHERE access_key_id = $1", session["access_key_id"]
    )
    assert row is not None
    assert session["secret_access_key"] not in json.dumps(dict(row), default=str)


async def test_a_proof_signs_in_once(signin: SignInGateway) -> None:
    proof = make_proof(signin.developer, await asyncio.to_thread(signin.info))
    first = await asyncio.to_thread(signin.post, proof)
    assert first.status_code == 201
    before = await signin.pool.fetchval("SELECT count(*) FROM auth_sessions")
    again = await asyncio.to_thread(signin.post, proof)
    assert (again.status_code, _error(again)) == (401, "PAO-AUTH-016")
    assert await signin.pool.fetchval("SELECT count(*) FROM auth_sessions") == before


async def test_a_tampered_proof_is_refused_by_sts(signin: SignInGateway) -> None:
    proof = make_proof(signin.developer, await asyncio.to_thread(signin.info))
    signed_at = datetime.strptime(proof["headers"]["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    proof["headers"]["X-Amz-Date"] = (signed_at - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    answer = await asyncio.to_thread(signin.post, proof)
    assert (answer.status_code, _error(answer)) == (403, "PAO-AUTH-017")
    assert "SignatureDoesNotMatch" in answer.json()["error"]["message"]


async def test_a_wrong_secret_is_refused_by_sts(signin: SignInGateway) -> None:
    wrong = ReadOnlyCredentials(signin.developer.access_key, "x" * 40, signin.developer.token)
    answer = await asyncio.to_thread(
        signin.post, make_proof(wrong, await asyncio.to_thread(signin.info))
    )
    assert (answer.status_code, _error(answer)) == (403, "PAO-AUTH-017")


async def test_an_old_proof_is_refused_before_sts_sees_it(
    signin: SignInGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await asyncio.to_thread(signin.info)
    ten_minutes_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: ten_minutes_ago)
    proof = make_proof(signin.developer, info)
    monkeypatch.undo()
    answer = await asyncio.to_thread(signin.post, proof)
    assert (answer.status_code, _error(answer)) == (401, "PAO-AUTH-015")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda p: p["headers"].update({"X-PAO-Server-ID": "pao.other.example"}),
            "X-PAO-Server-ID",
        ),
        (lambda p: p.update({"body": "Action=GetSessionToken&Version=2011-06-15"}), "/body"),
        (lambda p: p["headers"].update({"X-Forwarded-Host": "evil"}), "X-Forwarded-Host"),
        (lambda p: p["headers"].pop("X-PAO-Server-ID"), "/headers"),
        (
            lambda p: p["headers"].update(
                {"Authorization": p["headers"]["Authorization"].replace("/sts/", "/iam/")}
            ),
            "Authorization",
        ),
    ],
    ids=["another-pao", "another-action", "extra-header", "audience-missing", "not-sts"],
)
async def test_a_proof_not_made_for_this_pao_is_refused(
    signin: SignInGateway, change: Any, field: str
) -> None:
    proof = make_proof(signin.developer, await asyncio.to_thread(signin.info))
    change(proof)
    answer = await asyncio.to_thread(signin.post, proof)
    assert (answer.status_code, _error(answer)) == (400, "PAO-AUTH-014"), answer.text
    assert field in answer.json()["error"]["details"][0]["field"]


async def test_an_unmapped_role_is_refused(signin: SignInGateway) -> None:
    answer = await asyncio.to_thread(
        signin.post, make_proof(signin.unmapped, await asyncio.to_thread(signin.info))
    )
    assert (answer.status_code, _error(answer)) == (403, "PAO-AUTH-011")
    assert f"assumed-role/{UNMAPPED}/someone" in answer.json()["error"]["message"]


async def test_a_session_key_never_minted_is_answered_as_a_wrong_key(
    signin: SignInGateway,
) -> None:
    # Even with the installation's own session key (so the signature is right), an id that was
    # never minted names nobody.
    keys = SessionKeys(signin.key_file.read_bytes(), signin.pool, ttl=timedelta(hours=1))
    forged = "PAOS" + "A" * 16
    with pytest.raises(CliError) as refused:
        await asyncio.to_thread(
            _whoami, signin.url, ReadOnlyCredentials(forged, keys.secret_of(forged), None)
        )
    assert refused.value.code == "PAO-AUTH-005"
    with pytest.raises(CliError) as guessed:
        await asyncio.to_thread(
            _whoami, signin.url, ReadOnlyCredentials(forged, "guessed-secret", None)
        )
    assert guessed.value.code == "PAO-AUTH-005"


async def test_an_expired_session_is_refused_with_its_own_code(
    settings: Settings,
    pool: asyncpg.Pool,
    catalog_parts: CatalogParts,
    signin: SignInGateway,
) -> None:
    short = settings.model_copy(
        update={
            "aws_endpoint_url": signin.aws.endpoint_url,
            "session_key_file": signin.key_file,
            "session_ttl_seconds": 1,
        }
    )
    async with _serve(short, _keys(signin.aws), pool, catalog_parts) as url:
        info = (await asyncio.to_thread(httpx.get, f"{url}/api/v1/auth/sign-in")).json()
        answer = await asyncio.to_thread(
            httpx.post, f"{url}/api/v1/auth/sign-in", json=make_proof(signin.developer, info)
        )
        session = answer.json()
        credentials = ReadOnlyCredentials(
            session["access_key_id"], session["secret_access_key"], None
        )
        assert (await asyncio.to_thread(_whoami, url, credentials))["user"] == "erin"
        await asyncio.sleep(1.2)
        with pytest.raises(CliError) as expired:
            await asyncio.to_thread(_whoami, url, credentials)
        assert expired.value.code == "PAO-AUTH-018"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_sts_out_of_reach_answers_503_and_signs_nobody_in(
    settings: Settings,
    pool: asyncpg.Pool,
    catalog_parts: CatalogParts,
    signin: SignInGateway,
) -> None:
    away = settings.model_copy(
        update={
            "sts_endpoint_url": f"http://127.0.0.1:{_closed_port()}",
            "session_key_file": signin.key_file,
        }
    )
    async with _serve(away, _keys(signin.aws), pool, catalog_parts) as url:
        info = (await asyncio.to_thread(httpx.get, f"{url}/api/v1/auth/sign-in")).json()
        answer = await asyncio.to_thread(
            httpx.post, f"{url}/api/v1/auth/sign-in", json=make_proof(signin.developer, info)
        )
    assert (answer.status_code, _error(answer)) == (503, "PAO-SYS-002")
    assert answer.headers["Retry-After"] == "5"


@pytest.fixture
def cli_env(signin: SignInGateway, tmp_path: Path) -> dict[str, str]:
    """devctl's environment: the developer's temporary AWS credentials, nothing of PAO's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PAO_"))}
    env.update(
        AWS_ACCESS_KEY_ID=signin.developer.access_key,
        AWS_SECRET_ACCESS_KEY=signin.developer.secret_key,
        AWS_SESSION_TOKEN=signin.developer.token or "",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        PAO_CONFIG_FILE=str(tmp_path / "config.yaml"),
        PAO_CACHE_DIR=str(tmp_path / "cache"),
    )
    return env


def _devctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "devctl"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_devctl_login_caches_a_session_that_later_commands_sign_with(
    signin: SignInGateway, cli_env: dict[str, str], tmp_path: Path
) -> None:
    login = await asyncio.to_thread(
        _devctl, cli_env, "--endpoint", signin.url, "-o", "json", "login"
    )
    assert login.returncode == 0, login.stderr
    signed_in = json.loads(login.stdout)
    assert signed_in["user"] == "erin"
    cache = Path(signed_in["cache"])
    assert cache.parent == tmp_path / "cache"
    assert cache.stat().st_mode & 0o077 == 0

    me = await asyncio.to_thread(_devctl, cli_env, "--endpoint", signin.url, "-o", "json", "whoami")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["access_key_id"] == signed_in["access_key_id"]

    logout = await asyncio.to_thread(_devctl, cli_env, "--endpoint", signin.url, "logout")
    assert logout.returncode == 0
    assert not cache.exists()
    # Without a session and without sign_in, devctl signs with the AWS key itself, which this
    # gateway (sigv4 with static keys) does not know.
    unknown = await asyncio.to_thread(_devctl, cli_env, "--endpoint", signin.url, "whoami")
    assert unknown.returncode != 0
    assert "PAO-AUTH-005" in unknown.stderr
