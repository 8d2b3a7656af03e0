"""The AsyncAPI 3.0 document of PAO's Kafka topics (`python -m pao.contracts.asyncapi`).

Generated from the event models, so it changes when they do; `docs/asyncapi.json` holds a copy
that a unit test keeps equal to this output. It is built here rather than by FastStream: PAO's
consumers are not FastStream subscribers (bench/consumers.py: FastStream's per-message
subscriber drained the same events at well under half the rate of PAO's consumer), and this
document names every event type a topic carries, with its payload schema, key and headers,
where a subscriber-derived document would show one payload per subscriber.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel

from pao.contracts.envelope import EventEnvelope
from pao.contracts.events import (
    CATALOG_EVENTS,
    FULFILLMENT_EVENTS,
    REQUEST_EVENTS,
    RESOURCE_EVENTS,
    Event,
)
from pao.contracts.topics import ALL_TOPICS, CATEGORIES, DEAD_LETTER_TOPIC, topic_for_category

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMAS = "#/components/schemas/"

#: Event types per stream category; categories not listed publish none yet.
EVENTS_BY_CATEGORY: dict[str, dict[str, type[Event]]] = {
    "request": REQUEST_EVENTS,
    "resource": RESOURCE_EVENTS,
    "fulfillment": FULFILLMENT_EVENTS,
    "catalog": CATALOG_EVENTS,
}

#: The stream id (the Kafka key) of each category's events.
_STREAM_KEYS: dict[str, dict[str, Any]] = {
    "request": {
        "type": "string",
        "pattern": "^request-[0-9a-f-]{36}$",
        "description": "The stream id `request-<request_id>`: one request, one partition.",
    },
    "resource": {
        "type": "string",
        "pattern": "^resource-[0-9a-f-]{36}$",
        "description": "The stream id `resource-<resource_id>`: one resource, one partition.",
    },
    "fulfillment": {
        "type": "string",
        "pattern": "^fulfillment-[0-9a-f-]{36}$",
        "description": "The stream id `fulfillment-<request_id>`: fulfilment's work on one "
        "request, on one partition.",
    },
    "catalog": {
        "type": "string",
        "const": "catalog",
        "description": "The stream id `catalog`: every catalog event is on one partition.",
    },
}

_TOPIC_DESCRIPTIONS: dict[str, str] = {
    "request": "Every event of every request, as the request service decided it: submission, "
    "each action dispatched and its progress as recorded by the request, the outcome, retries, "
    "aborts, escalations, approvals and Terraform plans.",
    "resource": "What requests made, through their lives: provisioning, active, updating, "
    "decommissioning, decommissioned or failed, with the request that caused each change.",
    "catalog": "Changes to the served catalog: items and bundles published, updated or removed, "
    "operators' switches of an item's fulfilment mode, and each refresh (or failed refresh).",
    "fulfillment": "What fulfilment did with each dispatched action (one generation of it): "
    "attempts started and retried, tickets opened and written to, and how the run ended. The "
    "request service reads these and records what they mean on the request's stream.",
    "notification": "Reserved for notification streams; nothing is published here yet.",
    "system": "Reserved for system streams; nothing is published here yet.",
}


def _package_version() -> str:
    try:
        return version("pao-contracts")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema; nested models move to components/schemas and are referenced."""
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    defs.update(schema.pop("$defs", {}))
    return schema


def _stream_key(category: str) -> dict[str, Any]:
    return _STREAM_KEYS.get(
        category,
        {
            "type": "string",
            "pattern": f"^{category}(-.+)?$",
            "description": f"The stream id (`{category}` or `{category}-<id>`).",
        },
    )


def _headers(event_type: str | None, schema_version: int | None) -> dict[str, Any]:
    """The Kafka headers the relay sets; each value is a UTF-8 string."""
    event_type_schema: dict[str, Any] = {"type": "string", "description": "The event type."}
    version_schema: dict[str, Any] = {
        "type": "string",
        "pattern": "^[1-9][0-9]*$",
        "description": "The payload's schema version, in decimal.",
    }
    if event_type is not None:
        event_type_schema["const"] = event_type
    if schema_version is not None:
        version_schema["const"] = str(schema_version)
    return {
        "type": "object",
        "required": ["event_type", "event_id", "schema_version"],
        "properties": {
            "event_type": event_type_schema,
            "event_id": {
                "type": "string",
                "format": "uuid",
                "description": "Unique per event: deduplicate on it.",
            },
            "schema_version": version_schema,
            "correlation_id": {
                "type": "string",
                "description": "The id of the API call that caused the event; absent if none.",
            },
        },
    }


def _envelope(
    data: dict[str, Any],
    key: dict[str, Any],
    *,
    event_type: str | None = None,
    schema_version: int | None = None,
) -> dict[str, Any]:
    """EventEnvelope's JSON Schema with `data` (and, when known, type and version) narrowed."""
    schema = EventEnvelope.model_json_schema()
    properties = dict(schema["properties"])
    properties["stream_id"] = {**properties["stream_id"], **key}
    if event_type is not None:
        properties["event_type"] = {**properties["event_type"], "const": event_type}
    if schema_version is not None:
        properties["schema_version"] = {**properties["schema_version"], "const": schema_version}
    properties["data"] = data
    schema["properties"] = properties
    return schema


def _message(
    name: str,
    *,
    title: str,
    summary: str,
    payload: dict[str, Any],
    headers: dict[str, Any],
    key: dict[str, Any],
    correlated: bool = True,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": headers,
        "payload": payload,
        "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    if correlated:
        message["correlationId"] = {
            "description": "The correlation id of the API call that caused the event.",
            "location": "$message.header#/correlation_id",
        }
    return message


def _event_message(cls: type[Event], category: str, defs: dict[str, Any]) -> dict[str, Any]:
    key = _stream_key(category)
    summary = (cls.__doc__ or cls.event_type).strip().splitlines()[0]
    payload = _envelope(
        _schema(cls, defs), key, event_type=cls.event_type, schema_version=cls.schema_version
    )
    return _message(
        cls.event_type,
        title=f"{cls.event_type} (schema version {cls.schema_version})",
        summary=summary,
        payload=payload,
        headers=_headers(cls.event_type, cls.schema_version),
        key=key,
    )


def _any_event_message(category: str) -> dict[str, Any]:
    key = _stream_key(category)
    data = {"type": "object", "additionalProperties": True, "title": "Data"}
    return _message(
        f"{category}Event",
        title=f"Any {category} event",
        summary="An event of this category; its event_type header names the payload.",
        payload=_envelope(data, key),
        headers=_headers(None, None),
        key=key,
    )


def _dead_letter_message() -> dict[str, Any]:
    key: dict[str, Any] = {
        "type": "string",
        "description": "The key of the record that failed (its stream id).",
    }
    payload = {
        "type": "object",
        "title": "DeadLetter",
        "description": "A record a PAO consumer could not handle after its retries.",
        "required": ["consumer", "reason", "topic", "partition", "offset", "event"],
        "properties": {
            "consumer": {"type": "string", "description": "The consumer that gave up."},
            "reason": {"type": "string", "description": "The last error."},
            "topic": {"type": "string"},
            "partition": {"type": "integer"},
            "offset": {"type": "integer"},
            "event": {
                "description": "The record's envelope; null when the record was not decodable.",
                "anyOf": [{"$ref": SCHEMAS + "EventEnvelope"}, {"type": "null"}],
            },
        },
    }
    headers = {
        "type": "object",
        "required": ["consumer", "reason"],
        "properties": {
            "consumer": {"type": "string", "description": "The consumer that gave up."},
            "reason": {"type": "string", "description": "The last error, cut to 200 characters."},
        },
    }
    return _message(
        "DeadLetter",
        title="DeadLetter",
        summary="A record a consumer kept failing on, parked with the reason; the stream went on.",
        payload=payload,
        headers=headers,
        key=key,
        correlated=False,
    )


def _operation_id(topic: str) -> str:
    words = topic.removeprefix("pao.").replace(".", " ").title().replace(" ", "")
    return f"receive{words}"


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document describing every PAO topic and event, as a dict."""
    defs: dict[str, Any] = {}
    messages: dict[str, dict[str, Any]] = {}
    channel_messages: dict[str, list[str]] = {}
    channel_descriptions: dict[str, str] = {}

    for category in CATEGORIES:
        topic = topic_for_category(category)
        events = EVENTS_BY_CATEGORY.get(category, {})
        if events:
            for cls in events.values():
                messages[cls.event_type] = _event_message(cls, category, defs)
            channel_messages[topic] = list(events)
        else:
            message = _any_event_message(category)
            messages[message["name"]] = message
            channel_messages[topic] = [message["name"]]
        channel_descriptions[topic] = _TOPIC_DESCRIPTIONS.get(category, "")
    dead_letter = _dead_letter_message()
    messages[dead_letter["name"]] = dead_letter
    channel_messages[DEAD_LETTER_TOPIC] = [dead_letter["name"]]
    channel_descriptions[DEAD_LETTER_TOPIC] = (
        "Records a PAO consumer kept failing on, with the reason; for people to inspect."
    )
    assert set(channel_messages) == set(ALL_TOPICS)

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in ALL_TOPICS:
        channels[topic] = {
            "address": topic,
            "title": topic,
            "description": channel_descriptions[topic],
            "messages": {
                name: {"$ref": f"#/components/messages/{name}"} for name in channel_messages[topic]
            },
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        operations[_operation_id(topic)] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{topic}"},
            "title": f"Consume {topic}",
            "summary": "Read with your own consumer group; deduplicate on the event_id header.",
            "messages": [
                {"$ref": f"#/channels/{topic}/messages/{name}"} for name in channel_messages[topic]
            ],
        }

    defs["EventEnvelope"] = EventEnvelope.model_json_schema()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:pao:events",
        "info": {
            "title": "PAO events",
            "version": _package_version(),
            "description": (
                "Events of the Platform Automation Orchestrator on Kafka. Each stream category "
                "publishes to `pao.<category>.events`; the record key is the stream id, so one "
                "stream's events stay in order on one partition. The value is the event envelope "
                "as JSON, whose `data` is the event's payload. Delivery is at-least-once: "
                "deduplicate on `event_id`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "kafka.example.com:9092",
                "protocol": "kafka",
                "description": (
                    "Your Kafka bootstrap servers (PAO_KAFKA_BOOTSTRAP); `pao up` writes the "
                    "local broker's address to .pao/stack.json as `kafka`."
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": dict(sorted(defs.items())),
        },
    }


def render() -> str:
    """The document as the JSON text committed in docs/asyncapi.json."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201
