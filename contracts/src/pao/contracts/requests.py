"""REST bodies of the request endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pao.contracts.commands import Urgency


class SubmitBody(BaseModel):
    """`POST /requests`."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=100)
    inputs: dict[str, Any] = Field(default_factory=dict)


class AbortBody(BaseModel):
    """`POST /requests/{id}/abort`."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=2000)


class EscalateBody(BaseModel):
    """`POST /requests/{id}/escalate`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)
    urgency: Urgency = "high"
