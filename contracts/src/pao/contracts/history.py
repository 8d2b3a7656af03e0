"""`GET /api/v1/requests/{request_id}/history`: a request's events, each with what it changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class FieldChange(BaseModel):
    """One field of the request before and after an event (None: not set)."""

    model_config = ConfigDict(frozen=True)

    before: Any = None
    after: Any = None


class HistoryEntry(BaseModel):
    """One event of the request's stream: who, when, what, and the fields it changed."""

    model_config = ConfigDict(frozen=True)

    #: the event's version in the request's stream, from 1
    seq: int
    at: datetime
    event_type: str
    #: who caused it: a user for a command, `pao` or `pao-fulfillment` for the platform
    actor: str | None
    correlation_id: str | None
    #: the line a person reads, as in the request's log
    summary: str
    #: field -> before and after; `actions.<name>.status`, `approval.<what>` name parts
    changes: dict[str, FieldChange]


class HistoryPage(BaseModel):
    """A page of a request's history, oldest first; `total` counts every event shown."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    #: the time the history was cut at (`as_of`), None for all of it
    as_of: datetime | None = None
    total: int
    limit: int
    offset: int
    entries: list[HistoryEntry]
