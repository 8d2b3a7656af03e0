"""A request's history and its past states, and the audit of commands, as people read them.

The gateway and the projector run for real on their own database (no request service: nothing
moves a request on by itself, so its stream holds exactly what the people below did). Dana
submits a database, escalates it, then aborts it; Olga, of another team, tries to abort it too;
someone signs a submit with the wrong secret. Dana reads the history and the request as it was
between those steps; the admin reads the audit through the API and `devctl audit`.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from test_devctl import devctl

from conftest import ADMIN, DANA
from pao.devctl.errors import CliError
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, devctl_profile, fresh_stack, signed_call

pytestmark = pytest.mark.asyncio(loop_scope="session")

OLGA = ("PAOOLGAKEY0000000001", "olga-secret")
POSTGRES = {
    "db_name": "ledger",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "ledger@example.com",
}


@dataclass
class Story:
    request_id: str
    submit_correlation: str
    before_submit: datetime
    after_submit: datetime
    after_escalate: datetime
    refused_correlation: str


@pytest.fixture(scope="module")
def people(keys: KeyStore) -> KeyStore:
    """The session's developer and admin, and a developer of another team."""
    return KeyStore(
        [
            keys.get(DANA[0]),
            keys.get(ADMIN[0]),
            KeyEntry(
                access_key_id=OLGA[0], secret_access_key=OLGA[1], user="olga", teams=("growth",)
            ),
        ]  # type: ignore[list-item]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    people: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with fresh_stack(
        postgres_server,
        settings,
        people,
        services=("gateway", "projector"),
        data_dir=tmp_path_factory.mktemp("history"),
    ) as running:
        yield running


async def api(stack: Stack, method: str, path: str, key: tuple[str, str] = DANA, **kw: Any):
    return await signed_call(stack.url, method, path, key, **kw)


async def refused(stack: Stack, method: str, path: str, key: tuple[str, str], **kw: Any):
    with pytest.raises(CliError) as caught:
        await api(stack, method, path, key, **kw)
    return caught.value


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def story(stack: Stack) -> Story:
    before_submit = datetime.now(UTC)
    submit_correlation = f"history-{uuid.uuid4().hex[:8]}"
    answer = await api(
        stack,
        "POST",
        "/requests",
        body={"item_id": "postgresql-rds", "inputs": POSTGRES},
        extra_headers={"X-Correlation-ID": submit_correlation},
    )
    request_id = answer["request_id"]
    await api(stack, "GET", f"/requests/{request_id}")  # waits for the projection
    after_submit = datetime.now(UTC)
    await api(
        stack,
        "POST",
        f"/requests/{request_id}/escalate",
        body={"reason": "the launch needs it", "urgency": "high"},
    )
    after_escalate = datetime.now(UTC)
    await api(stack, "POST", f"/requests/{request_id}/abort", body={"reason": "not needed"})
    hidden = await refused(stack, "POST", f"/requests/{request_id}/abort", OLGA, body={})
    assert hidden.code == "PAO-REQ-001"
    refused_correlation = f"bad-signature-{uuid.uuid4().hex[:8]}"
    wrong = await refused(
        stack,
        "POST",
        "/requests",
        (DANA[0], "not-the-secret"),
        body={"item_id": "postgresql-rds", "inputs": POSTGRES},
        extra_headers={"X-Correlation-ID": refused_correlation},
    )
    assert wrong.code == "PAO-AUTH-005"
    return Story(
        request_id,
        submit_correlation,
        before_submit,
        after_submit,
        after_escalate,
        refused_correlation,
    )


async def test_the_history_lists_every_event_in_order_with_who_and_what_changed(
    stack: Stack, story: Story
) -> None:
    history = await api(stack, "GET", f"/requests/{story.request_id}/history")
    entries = history["entries"]
    assert history["total"] == 3
    assert [(e["seq"], e["event_type"], e["actor"]) for e in entries] == [
        (1, "RequestSubmitted", "dana"),
        (2, "RequestEscalated", "dana"),
        (3, "RequestAborted", "dana"),
    ]
    submitted, escalated, aborted = (e["changes"] for e in entries)
    assert submitted["status"] == {"before": None, "after": "submitted"}
    assert submitted["inputs"]["after"]["db_name"] == "ledger"
    assert entries[0]["correlation_id"] == story.submit_correlation
    assert escalated == {"escalation_level": {"before": 0, "after": 1}}
    assert aborted["status"] == {"before": "submitted", "after": "aborted"}
    assert aborted["last_error"] == {"before": None, "after": "aborted by dana: not needed"}
    assert entries[2]["summary"] == "dana aborted the request: not needed"
    assert entries[0]["at"] < entries[1]["at"] < entries[2]["at"]


async def test_the_history_is_paged_and_cut_at_as_of(stack: Stack, story: Story) -> None:
    page = await api(
        stack, "GET", f"/requests/{story.request_id}/history", params={"limit": 2, "offset": 2}
    )
    assert (page["total"], [e["seq"] for e in page["entries"]]) == (3, [3])
    cut = await api(
        stack,
        "GET",
        f"/requests/{story.request_id}/history",
        params={"as_of": story.after_escalate.isoformat()},
    )
    assert [e["event_type"] for e in cut["entries"]] == ["RequestSubmitted", "RequestEscalated"]


async def test_as_of_rebuilds_the_request_as_it_was_then(stack: Stack, story: Story) -> None:
    path = f"/requests/{story.request_id}"
    then = await api(stack, "GET", path, params={"as_of": story.after_submit.isoformat()})
    assert (then["status"], then["escalation_level"], then["escalations"]) == ("submitted", 0, [])
    later = await api(stack, "GET", path, params={"as_of": story.after_escalate.isoformat()})
    assert (later["status"], later["escalation_level"]) == ("submitted", 1)
    assert later["escalations"][0]["reason"] == "the launch needs it"
    # Rebuilt up to now, the request is exactly what the read model shows.
    now = await api(stack, "GET", path, params={"as_of": datetime.now(UTC).isoformat()})
    assert now.pop("as_of")
    assert now == await api(stack, "GET", path)
    assert now["status"] == "aborted"


async def test_a_time_before_the_request_or_not_a_time_is_refused(
    stack: Stack, story: Story
) -> None:
    path = f"/requests/{story.request_id}"
    early = await refused(stack, "GET", path, DANA, params={"as_of": "2001-01-01T00:00:00Z"})
    assert (early.status, early.code) == (404, "PAO-REQ-001")
    assert "did not exist yet" in early.message
    assert early.details[0]["field"] == "as_of"
    for where in (path, path + "/history"):
        bad = await refused(stack, "GET", where, DANA, params={"as_of": "yesterday"})
        assert (bad.status, bad.code, bad.details[0]["field"]) == (422, "PAO-API-008", "as_of")


async def test_another_developer_sees_neither_the_history_nor_the_past(
    stack: Stack, story: Story
) -> None:
    for path, params in (
        (f"/requests/{story.request_id}/history", {}),
        (f"/requests/{story.request_id}", {"as_of": story.after_submit.isoformat()}),
    ):
        hidden = await refused(stack, "GET", path, OLGA, params=params)
        assert (hidden.status, hidden.code) == (404, "PAO-REQ-001")


async def test_the_audit_holds_accepted_and_refused_commands_but_no_reads(
    stack: Stack, story: Story
) -> None:
    async def settled() -> list[dict[str, Any]] | None:
        page = await api(stack, "GET", "/audit", ADMIN, params={"limit": 1000})
        records = page["records"]
        return (
            records
            if any(r["correlation_id"] == story.refused_correlation for r in records)
            else None
        )

    records = await eventually(settled, what="the refused submit in the audit")
    assert {r["method"] for r in records} <= {"POST", "PUT", "PATCH", "DELETE"}
    ours = [r for r in records if r["target_id"] == story.request_id]
    assert [(r["user"], r["route"], r["status"], r["error_code"]) for r in ours] == [
        ("dana", "/api/v1/requests", 202, None),
        ("dana", "/api/v1/requests/{request_id}/escalate", 202, None),
        ("dana", "/api/v1/requests/{request_id}/abort", 202, None),
        ("olga", "/api/v1/requests/{request_id}/abort", 404, "PAO-REQ-001"),
    ]
    assert ours[0]["correlation_id"] == story.submit_correlation
    assert ours[0]["remote_addr"] == "127.0.0.1"
    assert ours[0]["access_key_id"] == DANA[0]
    [wrong] = [r for r in records if r["correlation_id"] == story.refused_correlation]
    assert (wrong["user"], wrong["access_key_id"], wrong["status"], wrong["error_code"]) == (
        None,
        DANA[0],
        403,
        "PAO-AUTH-005",
    )
    assert wrong["target_id"] is None


async def test_the_audit_filters_by_user_item_and_time(stack: Stack, story: Story) -> None:
    olga = await api(stack, "GET", "/audit", ADMIN, params={"user": "olga"})
    assert olga["total"] == 1
    assert olga["records"][0]["target_id"] == story.request_id
    item = await api(stack, "GET", "/audit", ADMIN, params={"target": story.request_id, "limit": 2})
    assert (item["total"], len(item["records"])) == (4, 2)
    submits = await api(stack, "GET", "/audit", ADMIN, params={"item": "postgresql-rds"})
    assert [(r["route"], r["target_id"]) for r in submits["records"]] == [
        ("/api/v1/requests", story.request_id)
    ]
    after = await api(
        stack,
        "GET",
        "/audit",
        ADMIN,
        params={"target": story.request_id, "since": story.after_escalate.isoformat()},
    )
    assert [r["route"].rsplit("/", 1)[1] for r in after["records"]] == ["abort", "abort"]
    before = await api(
        stack, "GET", "/audit", ADMIN, params={"until": story.before_submit.isoformat()}
    )
    assert before["total"] == 0
    bad = await refused(stack, "GET", "/audit", ADMIN, params={"since": "last week"})
    assert (bad.status, bad.code, bad.details[0]["field"]) == (422, "PAO-API-008", "since")


async def test_only_an_admin_reads_the_audit(stack: Stack, story: Story) -> None:
    denied = await refused(stack, "GET", "/audit", DANA)
    assert (denied.status, denied.code) == (403, "PAO-AUTH-010")


def profile(tmp_path: Path, stack: Stack, key: tuple[str, str]) -> Path:
    return devctl_profile(tmp_path / f"{key[0]}.yaml", stack.url, key)


async def test_devctl_audit_writes_every_record_as_csv(
    stack: Stack, story: Story, tmp_path: Path
) -> None:
    code, out, err = await devctl(
        "audit",
        "--target",
        story.request_id,
        "--format",
        "csv",
        config=profile(tmp_path, stack, ADMIN),
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["user"], r["status"], r["error_code"]) for r in rows] == [
        ("dana", "202", ""),
        ("dana", "202", ""),
        ("dana", "202", ""),
        ("olga", "404", "PAO-REQ-001"),
    ]
    assert rows[0]["correlation_id"] == story.submit_correlation


async def test_devctl_shows_the_history_up_to_a_time(
    stack: Stack, story: Story, tmp_path: Path
) -> None:
    code, out, err = await devctl(
        "request",
        "history",
        story.request_id,
        "--as-of",
        story.after_escalate.isoformat(),
        config=profile(tmp_path, stack, DANA),
    )
    assert code == 0, err
    assert "2 event(s)" in out
    assert "status: - -> submitted" in out
    assert "escalation_level: 0 -> 1" in out
    assert "RequestAborted" not in out
