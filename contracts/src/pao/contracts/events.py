"""Domain events: past tense, frozen, versioned. The payload (`data`) of an EventEnvelope.

An event's fields never change once released; a change is a new `schema_version` plus an
upcaster in the consumer. Each class names its `event_type` and `schema_version`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pao.contracts.envelope import EventEnvelope, NewEvent


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def new(
        self,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
    ) -> NewEvent:
        """This payload wrapped for appending."""
        return NewEvent(
            event_type=self.event_type,
            schema_version=self.schema_version,
            data=self.model_dump(mode="json"),
            correlation_id=correlation_id,
            causation_id=causation_id,
            actor=actor,
        )


# --- catalog (stream `catalog`) -------------------------------------------------------------------


class CatalogItemPublished(Event):
    """An item appeared in the catalog."""

    event_type: ClassVar[str] = "CatalogItemPublished"
    item_id: str
    version: str
    path: str
    item: dict[str, Any]


class CatalogItemUpdated(Event):
    """An item's definition changed."""

    event_type: ClassVar[str] = "CatalogItemUpdated"
    item_id: str
    previous_version: str
    version: str
    path: str
    item: dict[str, Any]


class CatalogItemRemoved(Event):
    """An item left the catalog; requests made against it keep their pinned version."""

    event_type: ClassVar[str] = "CatalogItemRemoved"
    item_id: str
    last_version: str


class CatalogBundlePublished(Event):
    """A bundle appeared or changed."""

    event_type: ClassVar[str] = "CatalogBundlePublished"
    bundle_id: str
    version: str
    bundle: dict[str, Any]


class CatalogBundleRemoved(Event):
    """A bundle left the catalog."""

    event_type: ClassVar[str] = "CatalogBundleRemoved"
    bundle_id: str


class CatalogRefreshed(Event):
    """A refresh found a valid catalog that differs from the one served; closes its changes."""

    event_type: ClassVar[str] = "CatalogRefreshed"
    catalog_version: str
    previous_version: str | None
    source: str
    revision: str | None
    added: list[str]
    updated: list[str]
    removed: list[str]


class CatalogRefreshFailed(Event):
    """A refresh found problems; the last good catalog stays served."""

    event_type: ClassVar[str] = "CatalogRefreshFailed"
    source: str
    revision: str | None
    kept_version: str | None
    problems: list[dict[str, Any]]


CATALOG_EVENTS: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        CatalogItemPublished,
        CatalogItemUpdated,
        CatalogItemRemoved,
        CatalogBundlePublished,
        CatalogBundleRemoved,
        CatalogRefreshed,
        CatalogRefreshFailed,
    )
}

ALL_EVENTS: dict[str, type[Event]] = {**CATALOG_EVENTS}


def decode(envelope: EventEnvelope) -> Event:
    """The typed payload of a stored event."""
    cls = ALL_EVENTS.get(envelope.event_type)
    if cls is None:
        raise KeyError(f"unknown event type {envelope.event_type!r}")
    return cls.model_validate(envelope.data)
