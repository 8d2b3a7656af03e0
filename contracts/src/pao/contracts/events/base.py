"""What every event payload is, and how a stored event of any version is read back.

An event's fields never change once released. A change is a new `schema_version` of the class,
plus an upcaster that turns the payload of the version before into the next one; `decode` runs
every upcaster from the stored version up to the class's current one, so code only ever sees the
current shape while the store keeps what was written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pao.contracts.envelope import EventEnvelope, NewEvent

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    #: The stream category (and so the topic) the event is written to.
    category: ClassVar[str]

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


class UnknownEvent(KeyError):
    """A stored event whose type or version this code cannot read."""


class EventRegistry:
    """Event classes by type, and the upcasters between their versions."""

    def __init__(self) -> None:
        self.classes: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, *classes: type[Event]) -> dict[str, type[Event]]:
        """Add event classes; returns them by type (for a category's own table)."""
        added = {}
        for cls in classes:
            if cls.event_type in self.classes:
                raise ValueError(f"event type {cls.event_type} is registered twice")
            self.classes[cls.event_type] = added[cls.event_type] = cls
        return added

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the function that turns version `from_version` into the next one."""

        def register(function: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = function
            return function

        return register

    def upcast(self, event_type: str, schema_version: int, data: Payload) -> Payload:
        """The payload in the current version of its class."""
        cls = self.classes.get(event_type)
        if cls is None:
            raise UnknownEvent(f"unknown event type {event_type!r}")
        if schema_version > cls.schema_version:
            raise UnknownEvent(
                f"{event_type} version {schema_version} is newer than this code "
                f"(which reads up to version {cls.schema_version})"
            )
        for version in range(schema_version, cls.schema_version):
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise UnknownEvent(f"no upcaster for {event_type} version {version}")
            data = step(data)
        return data

    def decode(self, envelope: EventEnvelope) -> Event:
        """The typed payload of a stored event, upcast to its current version."""
        data = self.upcast(envelope.event_type, envelope.schema_version, envelope.data)
        return self.classes[envelope.event_type].model_validate(data)


#: Every event PAO writes.
REGISTRY = EventRegistry()


def decode(envelope: EventEnvelope) -> Event:
    """The typed payload of a stored event, in its current version."""
    return REGISTRY.decode(envelope)
