"""Events written in an earlier version are read in the current one, through upcasters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope

ITEM = {
    "metadata": {"id": "x", "version": "1.0.0", "name": "X", "owner": "team-a"},
    "fulfillment": {
        "actions": [{"name": "approve", "type": "jira", "jira": {"summary": "s"}}],
        "fallback": {"strategy": "manual", "jira": {"summary": "by hand"}},
    },
}


def stored(event_type: str, version: int, data: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=version,
        stream_id="request-r1",
        stream_version=1,
        global_position=1,
        occurred_at=datetime.now(UTC),
        data=data,
    )


def test_a_version_1_submission_is_read_with_its_item_pinned_by_hash() -> None:
    v1 = {
        "request_id": "r1",
        "item_id": "x",
        "item_version": "1.0.0",
        "item_name": "X",
        "owner_team": "team-a",
        "item": ITEM,
        "inputs": {"a": 1},
        "resolved_inputs": {"a": 1, "b": 2},
        "environment": "dev",
        "requester": {"id": "dana", "name": None, "email": None, "teams": []},
        "idempotency_key": None,
    }
    event = ev.decode(stored("RequestSubmitted", 1, v1))
    assert isinstance(event, ev.RequestSubmitted)
    assert event.item_hash == ev.item_hash(ITEM)
    assert event.actions == [ev.PlannedAction(name="approve", type="jira")]
    assert event.manual_fallback is True
    assert event.resolved_inputs == {"a": 1, "b": 2}


def test_a_version_1_catalog_item_is_named_by_the_same_hash_a_request_pins() -> None:
    v1 = {"item_id": "x", "version": "1.0.0", "path": "x.yaml", "item": ITEM}
    event = ev.decode(stored("CatalogItemPublished", 1, v1))
    assert isinstance(event, ev.CatalogItemPublished)
    assert event.item_hash == ev.item_hash(ITEM)


def test_a_version_1_escalation_is_read_without_a_status() -> None:
    v1 = {"request_id": "r1", "by": "dana", "reason": "soon", "urgency": "high", "level": 1}
    event = ev.decode(stored("RequestEscalated", 1, v1))
    assert isinstance(event, ev.RequestEscalated)
    assert event.status is None


def test_a_hash_does_not_depend_on_key_order() -> None:
    reordered = {
        "fulfillment": ITEM["fulfillment"],
        "metadata": dict(reversed(ITEM["metadata"].items())),
    }
    assert ev.item_hash(reordered) == ev.item_hash(ITEM)


def test_an_event_newer_than_the_code_is_refused_by_name() -> None:
    with pytest.raises(ev.UnknownEvent, match="newer than this code"):
        ev.decode(stored("RequestEscalated", 9, {}))
    with pytest.raises(ev.UnknownEvent, match="unknown event type"):
        ev.decode(stored("NoSuchEvent", 1, {}))
