"""Kafka topic names. Each stream category publishes to `pao.<category>.events`."""

from __future__ import annotations

from pao.contracts.envelope import stream_category

#: Stream categories PAO writes; each has its own topic.
CATEGORIES: tuple[str, ...] = (
    "request",
    "resource",
    "catalog",
    "fulfillment",
    "notification",
    "system",
)

#: Where an event that keeps failing in a consumer is parked, with the reason.
DEAD_LETTER_TOPIC = "pao.deadletter"


def topic_for_category(category: str) -> str:
    """The topic that carries a category's events."""
    return f"pao.{category}.events"


def topic_for_stream(stream_id: str) -> str:
    """The topic that carries a stream's events."""
    return topic_for_category(stream_category(stream_id))


ALL_TOPICS: tuple[str, ...] = (*(topic_for_category(c) for c in CATEGORIES), DEAD_LETTER_TOPIC)
