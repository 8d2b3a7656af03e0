"""Plan, then apply exactly that plan: the real binary, state in the test database."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

from conftest import REPO
from pao.fulfillment.terraform import (
    Applied,
    Interrupted,
    Plan,
    StalePlan,
    TerraformRunner,
    schema_for,
)
from support import eventually

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH"),
    pytest.mark.skipif(sys.platform != "linux", reason="needs Linux (process death signal)"),
]

MODULES = REPO / "tests" / "fixtures" / "terraform"
CREDENTIAL = MODULES / "credential"
SLOW_STEPS = MODULES / "slow_steps"
TOKEN = "tok-7d1c-payments-0815"


def credential(name: str = "payments-api", **overrides: object) -> dict[str, object]:
    return {"name": name, "token": TOKEN, **overrides}


def workspace() -> str:
    return f"req-{uuid.uuid4().hex[:8]}-credential"


@pytest.fixture
def runner(tmp_path: Path, database_url: str) -> TerraformRunner:
    return TerraformRunner(
        work_root=tmp_path / "work", state_dsn=database_url, timeout=120, interrupt_grace=10
    )


class Messages:
    """An on_message sink that notes when each message arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []

    async def __call__(self, entry: dict[str, Any]) -> None:
        self.received.append((time.monotonic(), entry))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [entry for _, entry in self.received if entry["type"] == kind]

    def arrival(self, kind: str, address: str) -> float:
        return next(
            at
            for at, entry in self.received
            if entry["type"] == kind and entry["address"] == address
        )


async def stored_state(database_url: str, workspace: str) -> dict:
    conn = await asyncpg.connect(database_url)
    try:
        data = await conn.fetchval(
            f"SELECT data FROM {schema_for(workspace)}.states WHERE name = 'default'"
        )
    finally:
        await conn.close()
    return json.loads(data)


def addresses(state: dict) -> list[str]:
    return sorted(f"{r['type']}.{r['name']}" for r in state["resources"])


def by_address(plan: Plan) -> dict[str, dict[str, Any]]:
    return {change["address"]: change for change in plan.changes}


def attributes(change: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {a["name"]: (a["before"], a["after"]) for a in change["attributes"]}


def sleepers(seconds: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[-2:] == ["sleep", seconds] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


async def applied(runner: TerraformRunner, module: Path, variables: dict, ws: str) -> Applied:
    plan = await runner.plan(module, variables, workspace=ws)
    return await runner.apply_plan(module, plan.plan_file, workspace=ws)


async def test_a_plan_of_a_new_workspace_lists_creations_with_secrets_masked(
    runner: TerraformRunner, database_url: str
):
    ws = workspace()

    plan = await runner.plan(CREDENTIAL, credential(), workspace=ws)

    assert plan.counts == {"add": 2, "change": 0, "destroy": 0, "replace": 0}
    assert plan.has_changes
    assert not plan.destroys_or_replaces
    assert not plan.destroy
    record = by_address(plan)["terraform_data.record"]
    assert (record["type"], record["name"], record["action"]) == (
        "terraform_data",
        "record",
        "create",
    )
    assert attributes(record) == {
        "id": (None, "(known after apply)"),
        "input": (None, {"name": "payments-api", "tags": {"team": "payments"}, "token": "***"}),
        "output": (None, "(known after apply)"),
    }
    assert by_address(plan)["terraform_data.key"]["action"] == "create"
    assert TOKEN not in json.dumps(plan.changes)
    assert TOKEN not in repr(plan)
    assert plan.output_changes == ("name", "token")

    result = await runner.apply_plan(
        CREDENTIAL, plan.plan_file, workspace=ws, outputs=["name", "token"]
    )

    assert result == Applied(outputs={"name": "payments-api"}, sensitive=frozenset({"token"}))
    state = await stored_state(database_url, ws)
    assert addresses(state) == ["terraform_data.key", "terraform_data.record"]


async def test_a_plan_with_changed_inputs_shows_updates_and_replacements(
    runner: TerraformRunner,
):
    ws = workspace()
    await applied(runner, CREDENTIAL, credential(), ws)

    plan = await runner.plan(
        CREDENTIAL, credential("payments-gateway", key_size=4096), workspace=ws
    )

    assert plan.counts == {"add": 0, "change": 1, "destroy": 0, "replace": 1}
    assert plan.destroys_or_replaces
    record, key = by_address(plan)["terraform_data.record"], by_address(plan)["terraform_data.key"]
    assert record["action"] == "update"
    assert attributes(record) == {
        "input": (
            {"name": "payments-api", "tags": {"team": "payments"}, "token": "***"},
            {"name": "payments-gateway", "tags": {"team": "payments"}, "token": "***"},
        ),
        "output": (
            {"name": "payments-api", "tags": {"team": "payments"}, "token": "***"},
            "(known after apply)",
        ),
    }
    assert key["action"] == "replace"
    assert attributes(key)["triggers_replace"] == (2048, 4096)
    assert attributes(key)["input"] == ("payments-api-key", "payments-gateway-key")
    assert TOKEN not in json.dumps(plan.changes)


async def test_planning_again_without_changes_plans_nothing(runner: TerraformRunner):
    ws = workspace()
    await applied(runner, CREDENTIAL, credential(), ws)

    plan = await runner.plan(CREDENTIAL, credential(), workspace=ws)

    assert plan.changes == []
    assert not plan.has_changes
    assert plan.counts == {"add": 0, "change": 0, "destroy": 0, "replace": 0}


async def test_a_destroy_plan_removes_everything(runner: TerraformRunner, database_url: str):
    ws = workspace()
    await applied(runner, CREDENTIAL, credential(), ws)

    plan = await runner.plan(CREDENTIAL, credential(), workspace=ws, destroy=True)

    assert plan.destroy
    assert plan.counts == {"add": 0, "change": 0, "destroy": 2, "replace": 0}
    assert {change["action"] for change in plan.changes} == {"delete"}
    assert attributes(by_address(plan)["terraform_data.record"])["input"] == (
        {"name": "payments-api", "tags": {"team": "payments"}, "token": "***"},
        None,
    )
    result = await runner.apply_plan(
        CREDENTIAL, plan.plan_file, workspace=ws, outputs=["name", "token"]
    )
    assert result == Applied(outputs={}, sensitive=frozenset())
    assert (await stored_state(database_url, ws))["resources"] == []


async def test_sensitive_outputs_are_named_but_never_returned(runner: TerraformRunner):
    result = await applied(runner, CREDENTIAL, credential(), workspace())

    assert result.outputs == {"name": "payments-api"}
    assert result.sensitive == frozenset({"token"})
    assert TOKEN not in repr(result)


async def test_a_saved_plan_made_stale_by_another_apply_is_refused(
    runner: TerraformRunner, database_url: str
):
    ws = workspace()
    await applied(runner, CREDENTIAL, credential(), ws)
    plan_a = await runner.plan(CREDENTIAL, credential("plan-a"), workspace=ws)
    plan_b = await runner.plan(CREDENTIAL, credential("plan-b"), workspace=ws)
    await runner.apply_plan(CREDENTIAL, plan_b.plan_file, workspace=ws)

    with pytest.raises(StalePlan) as caught:
        await runner.apply_plan(CREDENTIAL, plan_a.plan_file, workspace=ws)

    assert not caught.value.transient
    assert "Saved plan is stale" in caught.value.message
    assert TOKEN not in caught.value.message
    state = await stored_state(database_url, ws)
    assert state["outputs"]["name"]["value"] == "plan-b"


async def test_messages_arrive_while_terraform_runs(runner: TerraformRunner):
    ws = workspace()
    planning, applying = Messages(), Messages()
    plan = await runner.plan(SLOW_STEPS, {"seconds": "3"}, workspace=ws, on_message=planning)

    await runner.apply_plan(SLOW_STEPS, plan.plan_file, workspace=ws, on_message=applying)
    finished = time.monotonic()

    assert sorted(e["address"] for e in planning.of_type("planned_change")) == [
        "terraform_data.first",
        "terraform_data.last",
        "terraform_data.slow",
    ]
    (summary,) = planning.of_type("change_summary")
    assert summary == {
        "level": "info",
        "message": "Plan: 3 to add, 0 to change, 0 to destroy.",
        "type": "change_summary",
        "address": None,
    }
    assert not planning.of_type("version")
    first_done = applying.arrival("apply_complete", "terraform_data.first")
    slow_done = applying.arrival("apply_complete", "terraform_data.slow")
    assert finished - first_done > 2.5, "the first resource's message came only at the end"
    assert slow_done - first_done > 2.5
    assert any(
        e["address"] == "terraform_data.slow" for e in applying.of_type("provision_progress")
    )


async def test_a_stop_request_interrupts_the_apply_and_frees_the_lock(
    runner: TerraformRunner, database_url: str
):
    ws = workspace()
    seconds = "83.25"  # a duration nothing else on the machine sleeps for
    plan = await runner.plan(SLOW_STEPS, {"seconds": seconds}, workspace=ws)
    messages = Messages()
    started = time.monotonic()

    async def should_stop() -> bool:
        return time.monotonic() - started > 1

    with pytest.raises(Interrupted) as caught:
        await runner.apply_plan(
            SLOW_STEPS,
            plan.plan_file,
            workspace=ws,
            on_message=messages,
            should_stop=should_stop,
            run_tag="job-1:worker-a",
        )

    assert time.monotonic() - started < 1 + runner.interrupt_grace
    assert not caught.value.transient
    assert "stopped after the resources in progress" in caught.value.message
    assert any("Interrupt received" in e["message"] for e in messages.of_type("log"))
    assert await runner.lock_holders(ws) == []
    assert not sleepers(seconds)
    # Terraform saved what it had finished before it stopped.
    assert "terraform_data.first" in addresses(await stored_state(database_url, ws))
    again = await runner.plan(SLOW_STEPS, {"seconds": "0"}, workspace=ws)
    assert by_address(again)["terraform_data.last"]["action"] == "create"
    assert "terraform_data.first" not in by_address(again)


STUBBORN = """#!/bin/sh
# terraform, except that its apply ignores SIGINT and hangs
if [ "$1" = apply ]; then
  trap '' INT
  sleep {seconds}
  exit 0
fi
exec {terraform} "$@"
"""


async def test_a_run_that_ignores_the_interrupt_is_killed_after_the_grace(
    tmp_path: Path, database_url: str
):
    seconds = "84.75"
    stubborn = tmp_path / "stubborn-terraform"
    stubborn.write_text(STUBBORN.format(seconds=seconds, terraform=shutil.which("terraform")))
    stubborn.chmod(0o755)
    runner = TerraformRunner(
        work_root=tmp_path / "work",
        state_dsn=database_url,
        binary=str(stubborn),
        timeout=120,
        interrupt_grace=2,
    )
    ws = workspace()
    plan = await runner.plan(SLOW_STEPS, {"seconds": "0"}, workspace=ws)
    started = time.monotonic()

    async def should_stop() -> bool:
        return time.monotonic() - started > 1

    with pytest.raises(Interrupted) as caught:
        await runner.apply_plan(SLOW_STEPS, plan.plan_file, workspace=ws, should_stop=should_stop)

    assert 3 <= time.monotonic() - started < 8
    assert "did not stop within 2 s and was killed" in caught.value.message
    assert not sleepers(seconds)


async def test_a_run_asked_to_stop_before_it_starts_changes_nothing(
    runner: TerraformRunner, database_url: str
):
    async def should_stop() -> bool:
        return True

    ws = workspace()

    with pytest.raises(Interrupted) as caught:
        await runner.plan(CREDENTIAL, credential(), workspace=ws, should_stop=should_stop)

    assert "was not started" in caught.value.message
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema_for(ws)}.states") is None
    finally:
        await conn.close()


async def _no_holders(runner: TerraformRunner, ws: str) -> bool:
    return not await runner.lock_holders(ws)


@pytest.fixture
async def database_sessions(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    opened: list[asyncpg.Connection] = []
    yield opened
    for conn in opened:
        if not conn.is_closed():
            conn.terminate()


async def test_release_lock_ends_an_orphaned_holder_but_not_a_live_run(
    tmp_path: Path, database_url: str, database_sessions: list[asyncpg.Connection]
):
    runner = TerraformRunner(
        work_root=tmp_path / "work", state_dsn=database_url, timeout=120, lock_timeout=0
    )
    live_ws, orphaned_ws = workspace(), workspace()
    seconds = "6.5"
    live_plan = await runner.plan(SLOW_STEPS, {"seconds": seconds}, workspace=live_ws)
    await runner.plan(CREDENTIAL, credential(), workspace=orphaned_ws)
    # A worker whose host vanished: its session (named as the runner names them) still holds
    # the workspace's advisory lock, keyed by the state row's id, as terraform takes it.
    orphan = await asyncpg.connect(
        database_url, server_settings={"application_name": "pao-tf:job-9:worker-gone"}
    )
    database_sessions.append(orphan)
    await orphan.execute(
        f"SELECT pg_advisory_lock(id) FROM {schema_for(orphaned_ws)}.states WHERE name = 'default'"
    )
    live = asyncio.create_task(
        runner.apply_plan(
            SLOW_STEPS, live_plan.plan_file, workspace=live_ws, run_tag="job 8/worker-b"
        )
    )
    try:
        await eventually(lambda: asyncio.to_thread(sleepers, seconds), what="the live apply")
        (live_holder,) = [h for h in await runner.lock_holders(live_ws) if h.key != -1]
        assert live_holder.run_tag == "job_8_worker-b"
        assert live_holder.application_name == "pao-tf:job_8_worker-b"
        (orphan_holder,) = await runner.lock_holders(orphaned_ws)
        assert orphan_holder.run_tag == "job-9:worker-gone"
        with pytest.raises(Exception, match="state lock"):
            await runner.plan(CREDENTIAL, credential(), workspace=orphaned_ws)

        def is_orphan(run_tag: str | None) -> bool:
            return run_tag == "job-9:worker-gone"

        assert await runner.release_lock(live_ws, is_orphan=is_orphan) == 0
        assert await runner.release_lock(orphaned_ws, is_orphan=is_orphan) == 1

        assert await runner.lock_holders(orphaned_ws) == []
        assert orphan.is_closed() or not await _alive(orphan)
        plan = await runner.plan(CREDENTIAL, credential(), workspace=orphaned_ws)
        assert plan.counts["add"] == 2
        assert (await live).outputs == {"seconds": seconds}
    finally:
        if not live.done():
            live.cancel()
        await asyncio.gather(live, return_exceptions=True)


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


WORKER = """
import asyncio, sys
from pathlib import Path
from pao.fulfillment.terraform import TerraformRunner

runner = TerraformRunner(work_root=Path(sys.argv[1]), state_dsn=sys.argv[2], timeout=120)
asyncio.run(runner.apply(Path(sys.argv[3]), {"seconds": sys.argv[4]}, workspace=sys.argv[5]))
"""


async def test_terraform_dies_with_a_killed_worker_and_its_lock_goes_with_it(
    tmp_path: Path, database_url: str, runner: TerraformRunner
):
    ws, seconds = workspace(), "85.5"
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, str(tmp_path / "worker"), database_url, str(SLOW_STEPS),
        seconds, ws,
    )  # fmt: skip
    try:
        await eventually(lambda: asyncio.to_thread(sleepers, seconds), what="the worker's apply")
        (terraform,) = [p for p in psutil.Process(worker.pid).children() if p.name() == "terraform"]
        assert [h for h in await runner.lock_holders(ws) if h.key != -1]

        worker.send_signal(signal.SIGKILL)
        await worker.wait()

        await eventually(
            lambda: asyncio.to_thread(_gone, terraform), what="terraform to die with its worker"
        )
        await eventually(lambda: _no_holders(runner, ws), what="the lock to be released")
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        # The provisioner's own child is not terraform's to take along; end it here.
        for proc in sleepers(seconds):
            proc.kill()


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
