"""Reading requests from the read models: what a caller may see, filtered, paged, sorted.

These are the request service's public queries; the gateway answers every read through them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import asyncpg

from pao.request.aggregate import (
    TERMINAL,
    Approval,
    PlanRecord,
    RequestState,
    Status,
    stream_of,
)
from pao.request.resource import STATES

STATUSES: tuple[str, ...] = get_args(Status)
#: The states a resource can be in.
RESOURCE_STATES = STATES
#: Statuses after which nothing more happens to a request unless it is retried.
ENDED = TERMINAL
_PROJECTION_POLL = 0.02

SORTS = {
    "created_at": "created_at ASC",
    "-created_at": "created_at DESC",
    "updated_at": "updated_at ASC",
    "-updated_at": "updated_at DESC",
    "status": "status ASC, created_at DESC",
}

_SUMMARY = """request_id, item_id, item_version, item_name, owner_team, requester, environment,
    status, escalation_level, created_at, updated_at, finished_at, last_error, kind,
    resource_id"""


@dataclass(frozen=True)
class Viewer:
    """Who is asking: requesters see their own requests, teams those of their items, admins all,
    and approvers a request while it waits for them."""

    user: str
    teams: tuple[str, ...] = ()
    admin: bool = False
    roles: tuple[str, ...] = ()

    def may_see(self, row: dict[str, Any]) -> bool:
        if self.admin or row["requester"] == self.user or row["owner_team"] in self.teams:
            return True
        approval = row.get("approval")
        return bool(approval and approval["state"] == "pending" and self.approves(approval))

    def approves(self, approval: dict[str, Any]) -> bool:
        approvers = approval["approvers"]
        return (
            self.user in (approvers.get("users") or ())
            or bool(set(self.teams) & set(approvers.get("teams") or ()))
            or bool(set(self.roles) & set(approvers.get("roles") or ()))
        )


@dataclass(frozen=True)
class RequestFilter:
    status: str | None = None
    item_id: str | None = None
    requester: str | None = None
    team: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _visible_to(
    viewer: Viewer, owner_column: str, equal: list[tuple[str, Any]]
) -> tuple[list[str], list[Any]]:
    """WHERE clauses (and their arguments) for the rows the viewer may see (theirs, their
    teams', all for an admin) with each given column equal to its value, when one is given."""
    clauses: list[str] = []
    args: list[Any] = []
    if not viewer.admin:
        args += [viewer.user, list(viewer.teams)]
        clauses.append(f"({owner_column} = $1 OR owner_team = ANY($2))")
    for column, value in equal:
        if value:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    return clauses, args


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "updated_at", "finished_at"):
        out[key] = out[key].isoformat() if out.get(key) else None
    return out


async def list_requests(
    pool: asyncpg.Pool,
    viewer: Viewer,
    where: RequestFilter,
    *,
    limit: int,
    offset: int,
    sort: str,
) -> tuple[int, list[dict[str, Any]]]:
    """A page of the requests the viewer may see, and how many match in all."""
    clauses, args = _visible_to(
        viewer,
        "requester",
        [
            ("status", where.status),
            ("item_id", where.item_id),
            ("requester", where.requester),
            ("owner_team", where.team),
        ],
    )

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.created_after:
        clauses.append(f"created_at >= {arg(where.created_after)}")
    if where.created_before:
        clauses.append(f"created_at < {arg(where.created_before)}")
    condition = " AND ".join(clauses) or "TRUE"
    total = await pool.fetchval(f"SELECT count(*) FROM requests WHERE {condition}", *args)
    rows = await pool.fetch(
        f"SELECT {_SUMMARY} FROM requests WHERE {condition} ORDER BY {SORTS[sort]} "
        f"LIMIT {arg(limit)} OFFSET {arg(offset)}",
        *args,
    )
    return int(total), [_summary(r) for r in rows]


async def get_request(
    pool: asyncpg.Pool, request_id: str, *, wait_seconds: float = 0.0
) -> dict[str, Any] | None:
    """A request with its inputs, actions and escalations; None if there is no such request.

    The projection trails the store by milliseconds: a request that was submitted but is not
    projected yet is waited for, up to `wait_seconds`, rather than answered as missing.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        # One snapshot for both tables, so the request and its actions agree.
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            found = await _get_request(conn, request_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        if not await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1)", stream_of(request_id)
        ):
            return None
        await asyncio.sleep(_PROJECTION_POLL)


async def current_status(pool: asyncpg.Pool, request_id: str) -> str | None:
    """The request's status in the read model."""
    return await pool.fetchval("SELECT status FROM requests WHERE request_id = $1", request_id)


async def _get_request(pool: asyncpg.Connection, request_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        f"SELECT {_SUMMARY}, inputs, details, correlation_id, stream_version, state "
        "FROM requests "
        "WHERE request_id = $1",
        request_id,
    )
    if row is None:
        return None
    actions = await pool.fetch(
        "SELECT name, type, status, attempts, outputs, error, started_at, finished_at, "
        "external_key, external_url FROM request_actions WHERE request_id = $1 ORDER BY position",
        request_id,
    )
    out = _summary(row)
    state = _state_of(out.pop("state"))
    # The mode the request runs in (None for a request made before modes were recorded: its
    # item's default).
    out["mode"] = state.submitted.mode if state and state.submitted else None
    out["approval"] = approval_view(state.approvals[-1]) if state and state.approvals else None
    out["has_plan"] = bool(state and state.plans)
    details = out.pop("details") or {}
    out["escalations"] = details.get("escalations", [])
    out["requester_details"] = details.get("requester")
    out["actions"] = [_action(a) for a in actions]
    return out


def _state_of(snapshot: dict[str, Any] | None) -> RequestState | None:
    return RequestState.from_snapshot(snapshot) if snapshot else None


def approval_view(approval: Approval) -> dict[str, Any]:
    """An approval as the API shows it."""
    return {
        "state": approval.state,
        "action": approval.action,
        "plan_id": approval.plan_id,
        "approvers": approval.policy["approvers"],
        "needed": approval.policy.get("needed", "any"),
        "changes": approval.policy.get("changes") or [],
        "decisions": approval.decisions,
        "requested_at": approval.requested_at,
    }


def _plan_view(plan: PlanRecord) -> dict[str, Any]:
    return {
        "action": plan.action,
        "generation": plan.generation,
        "state": plan.state,
        "created_at": plan.created_at,
        **plan.plan,
    }


async def get_plans(pool: asyncpg.Pool, request_id: str) -> list[dict[str, Any]] | None:
    """The Terraform plans of a request's actions, oldest first; None without a request."""
    snapshot = await pool.fetchval("SELECT state FROM requests WHERE request_id = $1", request_id)
    state = _state_of(snapshot)
    if state is None:
        return None
    return [_plan_view(p) for p in state.plans]


def _waits_for(approval: Approval, viewer: Viewer, roles: tuple[str, ...]) -> bool:
    approvers = approval.policy["approvers"]
    if any(d["by"] == viewer.user for d in approval.decisions):
        return False
    return (
        viewer.user in (approvers.get("users") or ())
        or bool(set(viewer.teams) & set(approvers.get("teams") or ()))
        or bool(set(roles) & set(approvers.get("roles") or ()))
    )


async def approvals_for(
    pool: asyncpg.Pool, viewer: Viewer, *, roles: tuple[str, ...] = (), limit: int = 200
) -> list[dict[str, Any]]:
    """The requests waiting for an approval the viewer may give (never their own)."""
    rows = await pool.fetch(
        "SELECT request_id, item_id, item_name, kind, requester, environment, state "
        "FROM requests WHERE status = 'awaiting_approval' AND requester <> $1 "
        "ORDER BY created_at LIMIT $2",
        viewer.user,
        limit,
    )
    waiting = []
    for row in rows:
        state = _state_of(row["state"])
        approval = state.pending_approval if state else None
        if state is None or approval is None or not _waits_for(approval, viewer, roles):
            continue
        plan = state.plan(approval.plan_id) if approval.plan_id else None
        waiting.append(
            {
                **{k: row[k] for k in ("request_id", "item_id", "item_name", "kind")},
                "requester": row["requester"],
                "environment": row["environment"],
                "resource_id": state.submitted.resource_id if state.submitted else None,
                **approval_view(approval),
                "plan": {"plan_id": plan.plan["plan_id"], "counts": plan.plan["counts"]}
                if plan
                else None,
            }
        )
    return waiting


@dataclass(frozen=True)
class ResourceFilter:
    item_id: str | None = None
    team: str | None = None
    owner: str | None = None
    state: str | None = None
    environment: str | None = None


_RESOURCE = """resource_id, item_id, item_version, item_name, owner_team, owner, environment,
    state, inputs, outputs, created_at, updated_at, expires_at, last_request_id, note"""


def _resource(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "updated_at", "expires_at"):
        out[key] = out[key].isoformat() if out.get(key) else None
    return out


async def list_resources(
    pool: asyncpg.Pool, viewer: Viewer, where: ResourceFilter, *, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """A page of the resources the viewer may see (newest first), and how many match."""
    clauses, args = _visible_to(
        viewer,
        "owner",
        [
            ("item_id", where.item_id),
            ("owner_team", where.team),
            ("owner", where.owner),
            ("state", where.state),
            ("environment", where.environment),
        ],
    )

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    condition = " AND ".join(clauses) or "TRUE"
    total = await pool.fetchval(f"SELECT count(*) FROM resources WHERE {condition}", *args)
    rows = await pool.fetch(
        f"SELECT {_RESOURCE} FROM resources WHERE {condition} "
        f"ORDER BY created_at DESC, resource_id LIMIT {arg(limit)} OFFSET {arg(offset)}",
        *args,
    )
    return int(total), [_resource(r) for r in rows]


async def get_resource(
    pool: asyncpg.Pool, resource_id: str, *, wait_seconds: float = 0.0
) -> dict[str, Any] | None:
    """A resource with the history of its requests; waits up to `wait_seconds` for one whose
    events are stored but not projected yet."""
    deadline = time.monotonic() + wait_seconds
    while True:
        row = await pool.fetchrow(
            f"SELECT {_RESOURCE} FROM resources WHERE resource_id = $1", resource_id
        )
        if row is not None:
            break
        if time.monotonic() >= deadline or not await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1)",
            f"resource-{resource_id}",
        ):
            return None
        await asyncio.sleep(_PROJECTION_POLL)
    out = _resource(row)
    history = await pool.fetch(
        "SELECT request_id, kind, status, requester, created_at, finished_at FROM requests "
        "WHERE resource_id = $1 ORDER BY created_at",
        resource_id,
    )
    out["requests"] = [_summary(r) for r in history]
    return out


async def expiring_resources(
    pool: asyncpg.Pool, *, notice_seconds: float, limit: int = 100
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Active resources whose expiry is near (to notice, once) and those already expired."""
    near = await pool.fetch(
        "SELECT resource_id, owner, owner_team, expires_at FROM resources "
        "WHERE state = 'active' AND expires_at <= now() + make_interval(secs => $1) "
        "AND expires_at > now() AND expiry_noticed IS DISTINCT FROM expires_at "
        "ORDER BY expires_at LIMIT $2",
        notice_seconds,
        limit,
    )
    due = await pool.fetch(
        "SELECT resource_id, item_id, owner, owner_team, expires_at FROM resources "
        "WHERE state = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT $1",
        limit,
    )
    return [dict(r) for r in near], [dict(r) for r in due]


def _action(row: asyncpg.Record) -> dict[str, Any]:
    outputs = dict(row["outputs"] or {})
    if row["external_key"]:
        outputs.setdefault("key", row["external_key"])
        outputs.setdefault("url", row["external_url"])
    return {
        "name": row["name"],
        "type": row["type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "outputs": outputs,
        "error": row["error"],
        "started_at": row["started_at"].isoformat() if row["started_at"] else None,
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


def status_of(request: dict[str, Any]) -> dict[str, Any]:
    """The compact status view of a request."""
    actions = request["actions"]
    done = sum(1 for a in actions if a["status"] in ("succeeded", "skipped"))
    return {
        "request_id": request["request_id"],
        "item_id": request["item_id"],
        "status": request["status"],
        "escalated": request["escalation_level"] > 0,
        "escalation_level": request["escalation_level"],
        "progress": {"done": done, "total": len(actions)},
        "actions": [
            {k: a[k] for k in ("name", "type", "status", "outputs", "error")} for a in actions
        ],
        "updated_at": request["updated_at"],
        "last_error": request["last_error"],
    }


async def get_logs(
    pool: asyncpg.Pool, request_id: str, *, after: int = 0, limit: int = 500
) -> list[dict[str, Any]]:
    """Log entries after sequence number `after`, in order."""
    rows = await pool.fetch(
        "SELECT seq, at, level, event_type, message, data FROM request_log "
        "WHERE request_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        request_id,
        after,
        limit,
    )
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]
