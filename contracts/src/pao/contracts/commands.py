"""Commands: what someone asks PAO to do, imperative and frozen."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pao.contracts.events import Requester

Urgency = Literal["low", "normal", "high", "critical"]


class SubmitRequest(BaseModel):
    """Request a catalog item with these inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str
    inputs: dict[str, Any]
    requester: Requester
    idempotency_key: str | None = None


class RetryRequest(BaseModel):
    """Run a failed request's failed actions again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    by: str


class AbortRequest(BaseModel):
    """Stop a request: no further action runs; open tickets are told."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    by: str
    reason: str = Field(default="aborted by the requester", max_length=2000)


class EscalateRequest(BaseModel):
    """Raise a request with its owning team."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    by: str
    reason: str = Field(min_length=3, max_length=2000)
    urgency: Urgency = "high"
