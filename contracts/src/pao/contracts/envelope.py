"""The event envelope: how every PAO event is stored, published and consumed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class NewEvent(BaseModel):
    """An event about to be appended: the store assigns its stream version and global position."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: str = Field(min_length=1, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)
    schema_version: int = Field(default=1, ge=1)
    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: datetime = Field(default_factory=utc_now)
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None


class EventEnvelope(BaseModel):
    """A stored event, exactly as it appears in the store and on Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    event_type: str
    schema_version: int
    stream_id: str
    stream_version: int
    global_position: int
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    data: dict[str, Any]
    #: The W3C trace context the event was appended in (None when nothing was traced).
    traceparent: str | None = None

    @property
    def category(self) -> str:
        """The stream category: `request` for `request-<id>`, `catalog` for `catalog`."""
        return stream_category(self.stream_id)


def stream_category(stream_id: str) -> str:
    """The category of a stream id, the part before the first dash."""
    return stream_id.split("-", 1)[0]
