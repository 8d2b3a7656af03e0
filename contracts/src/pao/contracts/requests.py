"""REST bodies of the request endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pao.contracts.commands import Mode, Urgency


class SubmitBody(BaseModel):
    """`POST /requests`."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=100)
    inputs: dict[str, Any] = Field(default_factory=dict)
    #: when the resource is decommissioned by itself (ISO 8601 with a zone), within the
    #: item's TTL policy
    expires_at: datetime | None = None
    #: one of the item's fulfilment modes; default: the mode the catalog runs the item in
    mode: Mode | None = None


class AbortBody(BaseModel):
    """`POST /requests/{id}/abort`."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class EscalateBody(BaseModel):
    """`POST /requests/{id}/escalate`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)
    urgency: Urgency = "high"


class UpdateResourceBody(BaseModel):
    """`POST /resources/{id}/update`: the whole new set of inputs."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any]
    #: one of the item's fulfilment modes; default: the mode the catalog runs the item in
    mode: Mode | None = None


class DecommissionBody(BaseModel):
    """`POST /resources/{id}/decommission`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)
    #: one of the item's fulfilment modes; default: the mode the catalog runs the item in
    mode: Mode | None = None


class DecisionBody(BaseModel):
    """`POST /requests/{id}/approve` and `.../reject`. `plan_id`, when given, must be the plan
    that waits (so an approver approves what they saw)."""

    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, min_length=1, max_length=2000)
    plan_id: str | None = Field(default=None, max_length=100)
