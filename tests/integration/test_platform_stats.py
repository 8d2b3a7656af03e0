"""The platform's figures (`GET /api/v1/stats`, `devctl stats`) as an operator reads them: counts
of what was submitted and finished, the job queue, parked work and lags, all from the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from test_devctl import devctl

from conftest import ADMIN, DANA
from pao.devctl.errors import CliError
from pao.devctl.output import console
from pao.devctl.stats import show
from pao.fulfillment import jobs
from pao.fulfillment.breakers import Parked
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, devctl_profile, fresh_stack, signed_call

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request")
#: The request service's consumer groups: once they have committed everything the relay
#: published, and the relay has published everything they appended, the platform is quiet.
CONSUMERS = {"pao-request-process", "pao-request-resources"}
POSTGRES = {
    "db_name": "orders",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "orders@example.com",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with fresh_stack(
        postgres_server,
        settings,
        keys,
        services=SERVICES,
        data_dir=tmp_path_factory.mktemp("stats"),
    ) as running:
        yield running


async def api(stack: Stack, method: str, path: str, *, key: tuple[str, str] = ADMIN, **kw: Any):
    return await signed_call(stack.url, method, path, key, **kw)


def profile(tmp_path: Path, stack: Stack, key: tuple[str, str]) -> Path:
    return devctl_profile(tmp_path / f"{key[0]}.yaml", stack.url, key)


async def submitted_requests(stack: Stack, count: int) -> list[str]:
    ids = []
    for n in range(count):
        body = {"item_id": "postgresql-rds", "inputs": {**POSTGRES, "db_name": f"orders{n}"}}
        answer = await api(stack, "POST", "/requests", body=body, key=DANA)
        ids.append(answer["request_id"])
    return ids


async def caught_up(stack: Stack) -> dict[str, Any]:
    """The figures once the relay, projector and consumers have everything, and the store's
    head stayed where it was over two reads (the lags are sampled: a handler may have appended a
    consequence the gauges do not show yet)."""
    heads: list[int] = []

    async def probe() -> dict[str, Any] | None:
        answer = await api(stack, "GET", "/stats")
        lags = answer["lags"]
        groups = {c["consumer"] for c in lags["consumers"]}
        parts = lags["relays"] + lags["projectors"] + lags["consumers"]
        heads.append(lags["head_position"])
        settled = len(heads) > 1 and heads[-1] == heads[-2]
        quiet = groups >= CONSUMERS and all(p["behind"] == 0 for p in parts) and settled
        return answer if quiet else None

    return await eventually(probe, timeout=30, interval=0.5, what="every part caught up")


async def status_becomes(stack: Stack, request_id: str, *wanted: str) -> str:
    """Wait until the read model shows the request in one of the `wanted` states."""

    async def probe() -> str | None:
        try:
            answer = await api(stack, "GET", f"/requests/{request_id}/status", key=DANA)
        except CliError as exc:
            if exc.code != "PAO-REQ-001":  # not projected yet
                raise
            return None
        return answer["status"] if answer["status"] in wanted else None

    return await eventually(probe, what=f"request {request_id} {' or '.join(wanted)}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def figures(stack: Stack) -> dict[str, Any]:
    """Three requests submitted and one aborted; fulfilment's queue holds a job due now, one due
    later and one parked behind the open breaker of JIRA."""
    first, *_ = await submitted_requests(stack, 3)
    await status_becomes(stack, first, "submitted", "in_progress", "awaiting_manual")
    await api(stack, "POST", f"/requests/{first}/abort", body={"reason": "not needed"})
    await status_becomes(stack, first, "aborted")
    about = {"request_id": first, "action": "manual", "generation": 1}
    await jobs.schedule(stack.pool, **about, kind="execute", dedupe_key="parked")
    [parked] = await jobs.claim(stack.pool, 1, lease=30, worker="test:1")
    await jobs.reschedule(stack.pool, parked, delay=600, error=str(Parked("jira", 600)))
    await jobs.schedule(stack.pool, **about, kind="poll", dedupe_key="due")
    await jobs.schedule(stack.pool, **about, kind="comment", dedupe_key="later", delay=600)
    return await caught_up(stack)


async def test_the_figures_count_what_happened(stack: Stack, figures: dict[str, Any]) -> None:
    for window in figures["throughput"]:
        assert {k: window[k] for k in ("submitted", "completed", "failed", "aborted")} == {
            "submitted": 3,
            "completed": 0,
            "failed": 0,
            "aborted": 1,
        }
    assert [w["window"] for w in figures["throughput"]] == ["5m", "1h"]
    assert figures["throughput"][0]["submitted_per_minute"] == 0.6

    latencies = figures["latencies"]
    assert latencies["overall"]["count"] == 1
    assert latencies["overall"]["p50"] == latencies["overall"]["p99"] >= 0
    assert [(r["item_id"], r["count"]) for r in latencies["by_item"]] == [("postgresql-rds", 1)]

    queue = figures["queue"]
    assert (queue["due"], queue["scheduled"], queue["running"], queue["expired_leases"]) == (
        1,
        2,
        0,
        0,
    )
    assert queue["oldest_due_age_seconds"] >= 0
    assert [(p["system"], p["parked_jobs"]) for p in figures["breakers"]["parked"]] == [("jira", 1)]

    lags = figures["lags"]
    head = await stack.pool.fetchval("SELECT max(global_position) FROM events")
    assert lags["head_position"] == head
    relay = next(r for r in lags["relays"] if r["name"] == stack.settings.relay_name)
    assert relay["oldest_unpublished_age_seconds"] is None
    assert {p["name"] for p in lags["projectors"]}
    assert all(c["committed"] > 0 for c in lags["consumers"])


async def test_only_admins_and_platform_operators_read_them(
    stack: Stack, figures: dict[str, Any]
) -> None:
    with pytest.raises(CliError) as caught:
        await api(stack, "GET", "/stats", key=DANA)
    assert (caught.value.status, caught.value.code) == (403, "PAO-AUTH-010")


def _stable(answer: dict[str, Any]) -> dict[str, Any]:
    """What stays the same between two reads of a quiet platform (no clocks, no ages)."""
    return {
        "throughput": answer["throughput"],
        "latencies": answer["latencies"],
        "queue": {k: v for k, v in answer["queue"].items() if k != "oldest_due_age_seconds"},
        "parked": [(p["system"], p["parked_jobs"]) for p in answer["breakers"]["parked"]],
        "head": answer["lags"]["head_position"],
    }


async def test_devctl_prints_the_same_figures(
    stack: Stack, figures: dict[str, Any], tmp_path: Path
) -> None:
    code, out, err = await devctl("-o", "json", "stats", config=profile(tmp_path, stack, ADMIN))
    assert code == 0, err
    assert _stable(json.loads(out)) == _stable(figures)


async def test_the_tables_show_every_area(
    figures: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 200)
    with console.capture() as captured:
        show(figures)
    out = captured.get()
    for heading in ("Throughput", "Submit to finish", "Fulfilment queue", "Breakers", "Lags"):
        assert heading in out
    assert "postgresql-rds" in out
    assert "jira" in out
    assert "pao-request-process" in out
