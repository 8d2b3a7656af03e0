"""`GET /api/v1/audit`: every command the gateway accepted or refused, as it recorded them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class AuditRecord(BaseModel):
    """One command: who sent it, what it asked, how it was answered, when and from where."""

    model_config = ConfigDict(frozen=True)

    audit_id: int
    at: datetime
    #: the verified caller; None when the call was refused before it was identified
    user: str | None
    #: the AWS principal the caller was mapped from, if any
    principal: str | None
    #: the access key the call was signed with (the one it claimed, when refused)
    access_key_id: str | None
    method: str
    #: the route template (`/api/v1/requests/{request_id}/abort`), or the path when none matched
    route: str
    #: the request, resource or catalog item acted on (for a submit, the request it made)
    target_id: str | None
    #: the catalog item concerned: the one a submit asked for, or the one a catalog command names
    item_id: str | None = None
    status: int
    error_code: str | None
    remote_addr: str | None
    correlation_id: str


class AuditPage(BaseModel):
    """A page of the audit, oldest first; `total` counts every match."""

    model_config = ConfigDict(frozen=True)

    total: int
    limit: int
    offset: int
    records: list[AuditRecord]
