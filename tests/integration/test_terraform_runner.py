"""The Terraform runner: the real binary, the catalog's modules, state in the test database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psutil
import pytest

from conftest import REPO
from pao.devstack.ports import free_port
from pao.fulfillment.terraform import TerraformError, TerraformRunner, schema_for
from support import eventually

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH"),
]

T = TypeVar("T")
PARAMETERSTORE = REPO / "catalog" / "modules" / "parameterstore"
SECRET = "s3cr3t-payments-key-0815"


def parameter(name: str, **overrides: object) -> dict[str, object]:
    """Variables of the parameterstore module for one parameter."""
    return {
        "name": name,
        "type": "SecureString",
        "value": SECRET,
        "description": "API key of the payments service",
        "tags": {"team": "payments"},
        **overrides,
    }


def workspace() -> str:
    return f"req-{uuid.uuid4().hex[:8]}-parameter"


@pytest.fixture
def runner(tmp_path: Path, database_url: str) -> TerraformRunner:
    return TerraformRunner(work_root=tmp_path / "work", state_dsn=database_url, timeout=120)


async def stored_state(database_url: str, workspace: str) -> dict:
    """The state Terraform keeps for the workspace in PostgreSQL."""
    conn = await asyncpg.connect(database_url)
    try:
        data = await conn.fetchval(
            f"SELECT data FROM {schema_for(workspace)}.states WHERE name = 'default'"
        )
    finally:
        await conn.close()
    return json.loads(data)


def parameter_id(state: dict) -> str:
    (resource,) = state["resources"]
    return resource["instances"][0]["attributes"]["id"]


async def test_apply_returns_the_requested_outputs(runner: TerraformRunner):
    outputs = await runner.apply(
        PARAMETERSTORE,
        parameter("/payments/api-key"),
        workspace=workspace(),
        outputs=["parameter_arn"],
    )

    assert outputs == {
        "parameter_arn": "arn:aws:ssm:us-east-1:000000000000:parameter/payments/api-key"
    }


async def test_applying_the_same_variables_again_changes_nothing(
    runner: TerraformRunner, database_url: str
):
    ws = workspace()
    first = await runner.apply(PARAMETERSTORE, parameter("/payments/api-key"), workspace=ws)
    created = await stored_state(database_url, ws)

    again = await runner.apply(PARAMETERSTORE, parameter("/payments/api-key"), workspace=ws)

    assert (
        again
        == first
        == {
            "parameter_name": "/payments/api-key",
            "parameter_arn": "arn:aws:ssm:us-east-1:000000000000:parameter/payments/api-key",
        }
    )
    unchanged = await stored_state(database_url, ws)
    assert parameter_id(unchanged) == parameter_id(created)
    assert unchanged["serial"] == created["serial"]


async def test_workspaces_keep_separate_state(runner: TerraformRunner, database_url: str):
    payments, billing = workspace(), workspace()

    await runner.apply(PARAMETERSTORE, parameter("/payments/api-key"), workspace=payments)
    await runner.apply(PARAMETERSTORE, parameter("/billing/db-password"), workspace=billing)
    again = await runner.apply(PARAMETERSTORE, parameter("/payments/api-key"), workspace=payments)

    assert again["parameter_name"] == "/payments/api-key"
    payments_state = await stored_state(database_url, payments)
    billing_state = await stored_state(database_url, billing)
    assert payments_state["outputs"]["parameter_name"]["value"] == "/payments/api-key"
    assert billing_state["outputs"]["parameter_name"]["value"] == "/billing/db-password"
    assert parameter_id(payments_state) != parameter_id(billing_state)


async def test_runs_in_different_workspaces_proceed_together(runner: TerraformRunner):
    names = [f"/team-{n}/token" for n in range(3)]

    results = await asyncio.gather(
        *(runner.apply(PARAMETERSTORE, parameter(name), workspace=workspace()) for name in names)
    )

    assert [r["parameter_name"] for r in results] == names


async def test_a_value_the_module_rejects_is_a_permanent_error_without_secrets(
    runner: TerraformRunner, tmp_path: Path
):
    with pytest.raises(TerraformError) as caught:
        await runner.apply(
            PARAMETERSTORE, parameter("/payments/api-key", type="Bogus"), workspace=workspace()
        )

    assert not caught.value.transient
    assert "Invalid value for variable" in caught.value.message
    assert "type must be String, StringList or SecureString." in caught.value.message
    assert SECRET not in str(caught.value)
    assert not list((tmp_path / "work").rglob("*.tfvars.json")), "the var file is left behind"


async def test_a_module_that_does_not_exist_is_a_clear_error(runner: TerraformRunner):
    missing = REPO / "catalog" / "modules" / "no-such-module"

    with pytest.raises(TerraformError) as caught:
        await runner.apply(missing, parameter("/payments/api-key"), workspace=workspace())

    assert not caught.value.transient
    assert str(missing) in caught.value.message


async def test_an_unreachable_state_database_is_a_transient_error(tmp_path: Path):
    password = "pg-pass-2718"
    runner = TerraformRunner(
        work_root=tmp_path,
        state_dsn=f"postgresql://pao:{password}@127.0.0.1:{free_port()}/pao",
        timeout=60,
    )

    with pytest.raises(TerraformError) as caught:
        await runner.apply(PARAMETERSTORE, parameter("/payments/api-key"), workspace=workspace())

    assert caught.value.transient
    assert "connection refused" in caught.value.message
    assert password not in caught.value.message
    assert SECRET not in caught.value.message


SLOW_MODULE = """
variable "marker" {
  type = string
}

resource "terraform_data" "slow" {
  input            = var.marker
  triggers_replace = var.marker
  provisioner "local-exec" {
    command = "sleep ${var.marker}"
  }
}

output "marker" {
  value = terraform_data.slow.output
}
"""


def slow_module(tmp_path: Path) -> Path:
    module = tmp_path / "slow"
    module.mkdir()
    (module / "main.tf").write_text(SLOW_MODULE)
    return module


@contextlib.asynccontextmanager
async def in_background(run: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run `run` as a task; cancel it (which kills its terraform) if the test leaves early."""
    task = asyncio.create_task(run)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TerraformError):
            await task


def sleepers(seconds: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] and proc.info["cmdline"][-2:] == ["sleep", seconds]:
            found.append(proc)
    return found


async def test_a_run_past_its_timeout_is_killed_and_transient(tmp_path: Path, database_url: str):
    runner = TerraformRunner(work_root=tmp_path / "work", state_dsn=database_url, timeout=3)
    seconds = "97.25"  # a duration nothing else on the machine sleeps for

    with pytest.raises(TerraformError) as caught:
        await runner.apply(slow_module(tmp_path), {"marker": seconds}, workspace=workspace())

    assert caught.value.transient
    assert "did not finish within 3 s" in caught.value.message
    assert not [p for p in sleepers(seconds) if p.status() != psutil.STATUS_ZOMBIE]


async def test_state_locked_by_another_run_is_a_transient_error(tmp_path: Path, database_url: str):
    module = slow_module(tmp_path)
    ws = workspace()
    # Two runners stand for two fulfilment workers: only the state lock keeps them apart.
    first = TerraformRunner(work_root=tmp_path / "one", state_dsn=database_url, timeout=60)
    second = TerraformRunner(
        work_root=tmp_path / "two", state_dsn=database_url, timeout=60, lock_timeout=0
    )
    assert (await first.apply(module, {"marker": "0"}, workspace=ws)) == {"marker": "0"}

    async with in_background(first.apply(module, {"marker": "4"}, workspace=ws)) as running:
        await eventually(lambda: asyncio.to_thread(sleepers, "4"), what="the first apply running")
        with pytest.raises(TerraformError) as caught:
            await second.apply(module, {"marker": "5"}, workspace=ws)
        assert (await running) == {"marker": "4"}

    assert caught.value.transient
    assert "state lock" in caught.value.message


async def test_a_long_first_apply_does_not_hold_up_other_workspaces(
    tmp_path: Path, database_url: str
):
    slow = TerraformRunner(work_root=tmp_path / "one", state_dsn=database_url, timeout=60)
    quick = TerraformRunner(
        work_root=tmp_path / "two", state_dsn=database_url, timeout=60, lock_timeout=0
    )
    long_apply = slow.apply(slow_module(tmp_path), {"marker": "4.5"}, workspace=workspace())
    async with in_background(long_apply) as running:
        await eventually(lambda: asyncio.to_thread(sleepers, "4.5"), what="the slow apply running")
        outputs = await quick.apply(
            PARAMETERSTORE, parameter("/payments/api-key"), workspace=workspace()
        )
        assert not running.done()
        assert (await running) == {"marker": "4.5"}

    assert outputs["parameter_name"] == "/payments/api-key"
