"""Commands: what someone asks PAO to do, imperative and frozen."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pao.contracts.events import Requester

Urgency = Literal["low", "normal", "high", "critical"]
Mode = Literal["automated", "manual"]


class SubmitRequest(BaseModel):
    """Request a catalog item with these inputs; `mode`, when given, is the requester's choice
    of the item's fulfilment modes (else the mode the catalog runs the item in)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str
    inputs: dict[str, Any]
    requester: Requester
    idempotency_key: str | None = None
    mode: Mode | None = None


class SwitchItemMode(BaseModel):
    """Run new requests of a catalog item in another of its fulfilment modes, and say why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item_id: str
    mode: Mode
    reason: str = Field(min_length=3, max_length=500)
    by: str


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
