"""The AsyncAPI document: committed copy up to date, every event and topic described, well formed.

Also keeps the example consumer in docs/examples compiling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pao.contracts.asyncapi import document
from pao.contracts.events import ALL_EVENTS, CATALOG_EVENTS, REQUEST_EVENTS
from pao.contracts.topics import ALL_TOPICS, DEAD_LETTER_TOPIC
from support.documents import refs, resolve

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "regenerate it: python -m pao.contracts.asyncapi > docs/asyncapi.json"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def _channel_messages(doc: dict[str, Any], topic: str) -> dict[str, Any]:
    channel = doc["channels"][topic]
    return {name: resolve(doc, m["$ref"]) for name, m in channel["messages"].items()}


def test_the_committed_document_is_the_generated_one(doc: dict[str, Any]) -> None:
    committed = DOCS / "asyncapi.json"
    assert committed.exists(), REGENERATE
    assert json.loads(committed.read_text(encoding="utf-8")) == doc, REGENERATE


def test_every_event_type_has_a_message(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    assert set(ALL_EVENTS) <= set(messages)
    for event_type, cls in ALL_EVENTS.items():
        payload = messages[event_type]["payload"]
        assert payload["properties"]["event_type"]["const"] == event_type
        assert payload["properties"]["schema_version"]["const"] == cls.schema_version


def test_request_and_catalog_events_sit_on_their_topics(doc: dict[str, Any]) -> None:
    assert set(_channel_messages(doc, "pao.request.events")) == set(REQUEST_EVENTS)
    assert set(_channel_messages(doc, "pao.catalog.events")) == set(CATALOG_EVENTS)


def test_every_topic_is_a_channel_with_a_message_and_a_receive_operation(
    doc: dict[str, Any],
) -> None:
    assert set(doc["channels"]) == set(ALL_TOPICS)
    received = {}
    for operation in doc["operations"].values():
        assert operation["action"] == "receive"
        received[resolve(doc, operation["channel"]["$ref"])["address"]] = operation
    for topic in ALL_TOPICS:
        assert doc["channels"][topic]["address"] == topic
        assert _channel_messages(doc, topic), f"{topic} has no message"
        assert received[topic]["messages"], f"nothing to receive on {topic}"


def test_the_document_is_well_formed(doc: dict[str, Any]) -> None:
    assert {"asyncapi", "info", "servers", "channels", "operations", "components"} <= set(doc)
    assert doc["asyncapi"].startswith("3.0")
    assert doc["info"]["title"] == "PAO events"
    assert doc["info"]["version"]
    assert {s["protocol"] for s in doc["servers"].values()} == {"kafka"}
    for ref in refs(doc):
        resolve(doc, ref)


def test_each_event_message_carries_the_envelope_key_and_headers(doc: dict[str, Any]) -> None:
    for topic in ALL_TOPICS:
        if topic == DEAD_LETTER_TOPIC:
            continue
        for name, message in _channel_messages(doc, topic).items():
            payload = message["payload"]
            assert payload["type"] == "object", name
            assert payload["properties"]["data"]["type"] == "object", name
            assert {"event_id", "stream_id", "data"} <= set(payload["required"]), name
            headers = message["headers"]["properties"]
            assert {"event_type", "event_id", "schema_version", "correlation_id"} <= set(headers)
            assert message["bindings"]["kafka"]["key"]["type"] == "string", name


def test_an_event_payload_is_its_models_json_schema(doc: dict[str, Any]) -> None:
    data = doc["components"]["messages"]["RequestSubmitted"]["payload"]["properties"]["data"]
    assert {"request_id", "item_id", "inputs", "requester"} <= set(data["required"])
    assert resolve(doc, data["properties"]["requester"]["$ref"])["title"] == "Requester"


def test_dead_letters_describe_the_failed_record(doc: dict[str, Any]) -> None:
    (message,) = _channel_messages(doc, DEAD_LETTER_TOPIC).values()
    assert {"consumer", "reason", "event"} <= set(message["payload"]["properties"])


def test_the_example_consumer_compiles() -> None:
    path = DOCS / "examples" / "consumer.py"
    compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_the_events_page_shows_the_example_consumer_as_saved() -> None:
    example = (DOCS / "examples" / "consumer.py").read_text(encoding="utf-8")
    page = (DOCS / "events.md").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in page, "copy docs/examples/consumer.py into docs/events.md"
