"""`pao up` as a developer runs it: it comes up, devctl uses its profile, Ctrl-C cleans up."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import yaml

from conftest import BIN, REPO
from pao.devstack.jira import CORRELATION_FIELD
from pao.devstack.ports import free_port

pytestmark = pytest.mark.e2e


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"pao up exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.1)
    return json.loads(path.read_text())


def assert_the_stack_aws_answers_with_its_own_key(aws: dict, state: Path) -> None:
    """The credentials file is private, moto takes its key, every environment names the role."""
    credentials = Path(aws["credentials_file"])
    assert credentials == state / "aws" / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(state / "aws" / "config"),
        "PATH": os.environ.get("PATH", ""),
    }
    code = "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])"
    caller = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert caller.returncode == 0, caller.stderr
    assert caller.stdout.strip() == "arn:aws:iam::123456789012:user/pao-provisioner"
    environments = yaml.safe_load((state / "environments.yaml").read_text())
    for settings in environments.values():
        assert settings["aws_role_arn"] == "arn:aws:iam::123456789012:role/pao-provisioning"
        assert urlsplit(aws["address"]).netloc in settings["rest_allowed_hosts"]


def test_pao_up_runs_the_stack_devctl_uses_it_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    env |= {"PAO_CONFIG_FILE": str(tmp_path / "devctl.yaml"), "PAO_LOG_FORMAT": "json"}
    port = free_port()
    log = (tmp_path / "pao-up.log").open("wb")
    up = subprocess.Popen(
        [str(BIN / "pao"), "up", "--port", str(port), "--data-dir", str(tmp_path / "state")],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    children: list[psutil.Process] = []
    try:
        stack = wait_for_file(tmp_path / "state" / "stack.json", up)
        assert stack["gateway"] == f"http://127.0.0.1:{port}"
        assert stack["database"].startswith("postgresql://")
        assert stack["kafka"].startswith("127.0.0.1:")
        children = psutil.Process(up.pid).children(recursive=True)
        assert {c.name() for c in children} >= {"postgres"}
        assert any("tansu" in c.name() for c in children)
        aws = stack["components"]["aws"]
        assert stack["aws"] == aws["address"]
        assert aws["address"].startswith("http://127.0.0.1:")
        assert aws["embedded"] is True
        assert aws["pid"] in {c.pid for c in children}
        assert stack["components"]["jira"]["correlation_field"] == CORRELATION_FIELD
        assert_the_stack_aws_answers_with_its_own_key(aws, tmp_path / "state")

        result = subprocess.run(
            [str(BIN / "devctl"), "--profile", "local", "--output", "json", "version"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["server"]["api_version"] == "v1"

        ready = subprocess.run(
            [str(BIN / "devctl"), "--profile", "local", "health", "ready"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ready.returncode == 0, ready.stderr
        assert "catalog" in ready.stdout

        listing = subprocess.run(
            [str(BIN / "devctl"), "--profile", "local", "-o", "json", "catalog", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        assert json.loads(listing.stdout)["total"] == 11
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        finally:
            log.close()

    assert up.returncode == 0, (tmp_path / "pao-up.log").read_text()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {[p.pid for p in alive]}"
    assert not (tmp_path / "state" / "stack.json").exists()
