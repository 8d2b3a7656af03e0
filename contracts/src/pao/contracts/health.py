"""REST models of the Phase 1 endpoints: health, readiness, version."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Health(BaseModel):
    """`GET /api/v1/health`: the process answers."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok"] = "ok"
    service: str = "pao-gateway"


class ComponentCheck(BaseModel):
    """One dependency checked by readiness."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    detail: str
    latency_ms: float | None = None


class Readiness(BaseModel):
    """`GET /api/v1/health/ready`: every dependency PAO needs, and whether it answers."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ready", "not_ready"]
    checks: list[ComponentCheck]


class Version(BaseModel):
    """`GET /api/v1/version`."""

    model_config = ConfigDict(frozen=True)

    version: str
    api_version: str = "v1"
    python: str
    git_sha: str | None = None
