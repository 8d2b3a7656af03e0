"""devctl as a user runs it: a real process signing real calls to a running gateway."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from conftest import BIN, TEST_KEY_ID, TEST_SECRET
from pao.devctl.profiles import Profile, save_profile
from pao.devstack.ports import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def devctl(
    *args: str, config: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run devctl with its own config file; returns exit code, stdout, stderr."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    environment |= {"PAO_CONFIG_FILE": str(config), "COLUMNS": "200", **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "devctl"),
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def profile_file(tmp_path: Path, endpoint: str, secret: str = TEST_SECRET) -> Path:
    path = tmp_path / "config.yaml"
    save_profile(
        "local",
        Profile(endpoint=endpoint, access_key_id=TEST_KEY_ID, secret_access_key=secret),
        make_default=True,
        path=path,
    )
    return path


async def test_health_ready_signed_for_real_succeeds(gateway: str, tmp_path: Path) -> None:
    code, out, err = await devctl("health", "ready", config=profile_file(tmp_path, gateway))
    assert code == 0, err
    assert "ready" in out
    assert "database" in out
    assert "broker" in out


async def test_json_output_is_for_scripts(gateway: str, tmp_path: Path) -> None:
    code, out, err = await devctl(
        "--output", "json", "version", config=profile_file(tmp_path, gateway)
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["client"]["version"] == data["server"]["version"]


async def test_whoami_shows_the_signed_identity(gateway: str, tmp_path: Path) -> None:
    code, out, err = await devctl("-o", "yaml", "whoami", config=profile_file(tmp_path, gateway))
    assert code == 0, err
    assert "user: dana" in out


async def test_a_stopped_gateway_gets_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    code, out, err = await devctl("health", "ready", config=profile_file(tmp_path, nobody))
    assert code == 1
    assert "PAO-CLI-001" in err
    assert "cannot reach" in err
    assert "Traceback" not in err + out


async def test_a_wrong_secret_prints_the_code_suggestion_and_correlation_id(
    gateway: str, tmp_path: Path
) -> None:
    code, out, err = await devctl("whoami", config=profile_file(tmp_path, gateway, "wrong"))
    assert code == 1
    assert "PAO-AUTH-005" in err
    assert "correlation id" in err
    assert "Traceback" not in err + out


async def test_no_endpoint_configured_is_explained(tmp_path: Path) -> None:
    code, _, err = await devctl("health", "check", config=tmp_path / "none.yaml")
    assert code == 2
    assert "--endpoint" in err


async def test_endpoint_flag_and_aws_credentials_from_the_environment(
    gateway: str, tmp_path: Path
) -> None:
    code, out, err = await devctl(
        "--endpoint",
        gateway,
        "whoami",
        config=tmp_path / "none.yaml",
        env={
            "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": TEST_SECRET,
            "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-creds"),
        },
    )
    assert code == 0, err
    assert "dana" in out
