"""Phase 4 and 5 routes: submit and follow requests, retry, abort, escalate."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pao.contracts import errors
from pao.contracts.commands import AbortRequest, EscalateRequest, RetryRequest, SubmitRequest
from pao.contracts.errors import ErrorDetail, PaoError
from pao.contracts.requests import AbortBody, DecisionBody, EscalateBody, SubmitBody
from pao.gateway import caching
from pao.gateway.bodies import read_model
from pao.gateway.follows import RECHECK_SECONDS
from pao.gateway.identity import requester_of
from pao.gateway.params import int_param, text_param
from pao.gateway.resources import (
    AUDITED_ITEM,
    CATALOG,
    CORRELATION_ID,
    FOLLOWS,
    IDENTITY,
    POOL,
    SETTINGS,
    STORE,
    WAKEUPS,
    read_pool,
)
from pao.request import handlers, history, queries
from pao.shared.environments import environments, system_scope
from pao.shared.keystore import Identity

routes = web.RouteTableDef()

_FOLLOW_POLL = 0.25
_FOLLOW_POLL_MAX = 2.0
_KEEPALIVE = 15.0
#: How long a read waits for a request just submitted to reach the read models.
_PROJECTION_WAIT = 2.0


def viewer_of(identity: Identity) -> queries.Viewer:
    return queries.Viewer(
        user=identity.user, teams=identity.teams, admin=identity.is_admin, roles=identity.roles
    )


def _not_found(request_id: str) -> PaoError:
    return PaoError(
        errors.REQUEST_NOT_FOUND,
        f"no request {request_id} that you may see",
        details=[ErrorDetail(field="request_id", message=request_id)],
    )


def _request_id(request: web.Request) -> str:
    """The request id in the path; one holding a NUL names no request (PostgreSQL text cannot
    hold it, so it is answered here rather than failing in a query)."""
    request_id = request.match_info["request_id"]
    if "\x00" in request_id:
        raise _not_found(request_id)
    return request_id


def _authorizer(request: web.Request):
    viewer = viewer_of(request[IDENTITY])

    def authorize(request: handlers.Ownership) -> None:
        row = {"requester": request.requester, "owner_team": request.owner_team}
        if not viewer.may_see(row):
            raise _not_found(request.request_id)

    return authorize


def _links(request_id: str) -> dict[str, str]:
    base = f"/api/v1/requests/{request_id}"
    return {"self": base, "status": f"{base}/status", "logs": f"{base}/logs"}


@routes.post("/api/v1/requests")
async def submit(request: web.Request) -> web.Response:
    """Validate and record a request; 202 with its id. Idempotency-Key repeats answer the same."""
    body = await read_model(request, SubmitBody)
    request[AUDITED_ITEM] = body.item_id
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise PaoError(
            errors.INVALID_INPUT,
            "Idempotency-Key must be 1 to 200 characters",
            details=[ErrorDetail(field="Idempotency-Key", message="length")],
        )
    requester = requester_of(request[IDENTITY])
    command = SubmitRequest(
        item_id=body.item_id,
        inputs=body.inputs,
        requester=requester,
        idempotency_key=key,
        mode=body.mode,
    )
    settings = request.app[SETTINGS]
    view = request.app[CATALOG].view
    item = view.items.get(body.item_id)
    # A new submit costs one statement: the key's claim and the first event together. A repeat
    # finds the key claimed there and is answered as the first was; one the catalog now refuses
    # (the item changed or went since) is looked up before it is refused.
    try:
        if item is None:
            raise PaoError(
                errors.ITEM_NOT_FOUND,
                f"no catalog item '{body.item_id}'",
                details=[ErrorDetail(field="/item_id", message=body.item_id)],
            )
        outcome = await handlers.submit_request(
            command,
            store=request.app[STORE],
            item=item,
            item_hash=view.hashes[body.item_id],
            default_environment=settings.default_environment,
            correlation_id=request[CORRELATION_ID],
            system=system_scope(settings),
            environments=environments(settings),
            expires_at=body.expires_at,
            catalog_mode=view.mode_of(body.item_id),
        )
    except PaoError as exc:
        if exc.code == errors.IDEMPOTENCY_KEY_REUSED:
            raise
        earlier = await handlers.earlier_submit(command, store=request.app[STORE])
        if earlier is None:
            raise
        outcome = earlier
    status = "submitted"
    if not outcome.created:
        existing = await queries.get_request(request.app[POOL], outcome.request_id)
        status = existing["status"] if existing else status
    answer = {
        "request_id": outcome.request_id,
        "status": status,
        "item_id": outcome.item_id,
        "item_version": outcome.item_version,
        "links": _links(outcome.request_id),
    }
    headers = {"Location": _links(outcome.request_id)["self"]}
    if not outcome.created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(answer, status=202, headers=headers)


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = text_param(request, name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        value.astimezone(UTC)  # an offset can carry the time out of range once in UTC
    except (ValueError, OverflowError) as exc:
        message = f"{name} must be an ISO 8601 time, e.g. 2026-11-26T08:00:00Z"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field=name, message=message)]
        ) from exc
    return value


@routes.get("/api/v1/requests")
async def list_requests(request: web.Request) -> web.Response:
    """The requests the caller may see, filtered, sorted and paged."""
    sort = request.query.get("sort", "-created_at")
    if sort not in queries.SORTS:
        message = f"sort must be one of {', '.join(queries.SORTS)}"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field="sort", message=message)]
        )
    wanted_status = text_param(request, "status")
    if wanted_status is not None and wanted_status not in queries.STATUSES:
        message = f"status must be one of {', '.join(queries.STATUSES)}"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field="status", message=message)]
        )
    where = queries.RequestFilter(
        status=text_param(request, "status"),
        item_id=text_param(request, "item_id"),
        requester=text_param(request, "requester"),
        team=text_param(request, "team"),
        created_after=_time_param(request, "created_after"),
        created_before=_time_param(request, "created_before"),
    )
    limit = int_param(request, "limit", 50, low=1, high=500)
    offset = int_param(request, "offset", 0, low=0, high=10_000_000)
    total, rows = await queries.list_requests(
        read_pool(request.app),
        viewer_of(request[IDENTITY]),
        where,
        limit=limit,
        offset=offset,
        sort=sort,
    )
    return web.json_response(
        {"total": total, "limit": limit, "offset": offset, "sort": sort, "requests": rows}
    )


async def _visible(request: web.Request) -> dict[str, Any]:
    """The request from the read models, if the caller may see it."""
    request_id = _request_id(request)
    versions = request.app[caching.VERSIONS]
    token = versions.reading()
    found = await queries.get_request(request.app[POOL], request_id, wait_seconds=_PROJECTION_WAIT)
    if found is not None:
        approval = found["approval"]
        visible = {
            "requester": found["requester"],
            "owner_team": found["owner_team"],
            # what `Viewer.may_see` asks of it: an approver sees a request while it waits
            "approval": {k: approval[k] for k in ("state", "approvers")} if approval else None,
        }
        known = caching.Known(str(found["stream_version"]), visible)
        versions.remember(
            caching.request_key(request_id), token, known, read_at=found["stream_version"]
        )
    if found is None or not viewer_of(request[IDENTITY]).may_see(found):
        raise _not_found(request_id)
    return found


def _tag(version: object, answer: str) -> str:
    """A request answer's tag: the read-model version it shows."""
    return caching.tag("request", version, answer)


def _unchanged(request: web.Request, answer: str) -> web.Response | None:
    """304 from what this gateway knows of the request, without the database, when the
    caller's tag is current and they may see it; None to read the database as usual."""
    if "If-None-Match" not in request.headers:
        return None
    known = request.app[caching.VERSIONS].known(caching.request_key(_request_id(request)))
    if known is None or not viewer_of(request[IDENTITY]).may_see(known.visible):
        return None  # the uncached path answers (and refuses) as it always does
    current = _tag(known.version, answer)
    return caching.not_modified(current) if caching.matches(request, current) else None


def aware_time_param(request: web.Request, name: str) -> datetime | None:
    """A time query parameter (`as_of`, ...) as an aware time; one without a zone is UTC."""
    value = _time_param(request, name)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@routes.get("/api/v1/requests/{request_id}")
async def get_request(request: web.Request) -> web.Response:
    """A request: what was asked, by whom, its actions with their outputs, its escalations;
    with `as_of`, as it was at that time, rebuilt from its events."""
    as_of = aware_time_param(request, "as_of")
    if as_of is None and (unchanged := _unchanged(request, "full")):
        return unchanged
    found = await _visible(request)
    if as_of is None:
        return caching.answer(request, _tag(found["stream_version"], "full"), found)
    past = await history.request_as_of(request.app[STORE], found["request_id"], as_of)
    # Rebuilt from the events up to `as_of`: the tag is of the answer itself.
    return caching.answer(request, caching.tag("request", "as-of", caching.digest(past)), past)


@routes.get("/api/v1/requests/{request_id}/status")
async def get_status(request: web.Request) -> web.Response:
    """Compact status with per-action progress."""
    if unchanged := _unchanged(request, "status"):
        return unchanged
    found = await _visible(request)
    current = _tag(found["stream_version"], "status")
    return caching.answer(request, current, queries.status_of(found))


@routes.get("/api/v1/requests/{request_id}/escalation")
async def get_escalation(request: web.Request) -> web.Response:
    """The escalation level and its history."""
    found = await _visible(request)
    return web.json_response(
        {
            "request_id": found["request_id"],
            "level": found["escalation_level"],
            "escalated": found["escalation_level"] > 0,
            "history": found["escalations"],
        }
    )


@routes.get("/api/v1/requests/{request_id}/logs")
async def get_logs(request: web.Request) -> web.StreamResponse:
    """Log entries in order; `?follow=true` streams new ones as server-sent events."""
    found = await _visible(request)
    request_id = found["request_id"]
    after = int_param(request, "after", 0, low=0, high=1_000_000)
    resume = request.headers.get("Last-Event-ID", "")
    if resume.isdigit():  # an event-stream client reconnecting
        after = max(after, int(resume))
    if request.query.get("follow", "false").lower() not in ("true", "1", "yes"):
        entries = await queries.get_logs(request.app[POOL], request_id, after=after)
        return web.json_response(
            {"request_id": request_id, "status": found["status"], "entries": entries}
        )
    with request.app[FOLLOWS].held(request[IDENTITY].user):
        return await _follow_logs(request, request_id, after)


async def _follow_logs(request: web.Request, request_id: str, after: int) -> web.StreamResponse:
    """Stream the request's new log entries until it ends or the stream has lasted its most.

    The stream reads the log when the projector's notification says it changed (`LogWakeups`),
    and every RECHECK_SECONDS regardless; while the listener is down it polls, less often the
    quieter the log, down to once every _FOLLOW_POLL_MAX seconds.
    """
    pool = request.app[POOL]
    wakeups = request.app[WAKEUPS]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Correlation-ID": request[CORRELATION_ID],
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    ends_at = loop.time() + request.app[SETTINGS].log_follow_max_seconds
    pause = _FOLLOW_POLL
    try:
        with wakeups.watching(request_id) as woken:
            while True:
                woken.clear()  # before reading: a change after the read wakes the next wait
                entries = await queries.get_logs(pool, request_id, after=after)
                for entry in entries:
                    after = entry["seq"]
                    await response.write(
                        f"id: {after}\nevent: log\ndata: {json.dumps(entry)}\n\n".encode()
                    )
                    quiet_since = loop.time()
                status = await queries.current_status(pool, request_id)
                if status in queries.ENDED and not entries:
                    await response.write(
                        f"event: end\ndata: {json.dumps({'status': status})}\n\n".encode()
                    )
                    break
                if loop.time() >= ends_at:
                    # An event-stream client reconnects, resuming after the last id it saw.
                    await response.write(b": the stream has lasted its most; reconnect\n\n")
                    break
                if loop.time() - quiet_since > _KEEPALIVE:
                    await response.write(b": keep-alive\n\n")
                    quiet_since = loop.time()
                if status in queries.ENDED:
                    continue  # ended with entries just sent: read once more, then say so
                pause = _FOLLOW_POLL if entries else min(pause * 2, _FOLLOW_POLL_MAX)
                wait = RECHECK_SECONDS if wakeups.listening else pause
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        woken.wait(), timeout=min(wait, max(0.0, ends_at - loop.time()))
                    )
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away
    return response


@routes.post("/api/v1/requests/{request_id}/retry")
async def retry(request: web.Request) -> web.Response:
    """Re-run the failed actions of a failed request."""
    event = await handlers.retry_request(
        RetryRequest(request_id=_request_id(request), by=request[IDENTITY].user),
        store=request.app[STORE],
        authorize=_authorizer(request),
        correlation_id=request[CORRELATION_ID],
        cooldown=request.app[SETTINGS].retry_cooldown_seconds,
    )
    return web.json_response(
        {"request_id": event.request_id, "status": "in_progress", "retried": event.actions},
        status=202,
    )


@routes.post("/api/v1/requests/{request_id}/abort")
async def abort(request: web.Request) -> web.Response:
    """Stop a request; its open tickets are told."""
    body = await read_model(request, AbortBody) if request.body_exists else AbortBody()
    event = await handlers.abort_request(
        AbortRequest(
            request_id=_request_id(request),
            by=request[IDENTITY].user,
            reason=body.reason or f"aborted by {request[IDENTITY].user}",
        ),
        store=request.app[STORE],
        authorize=_authorizer(request),
        correlation_id=request[CORRELATION_ID],
    )
    return web.json_response(
        {"request_id": event.request_id, "status": "aborted", "reason": event.reason}, status=202
    )


@routes.post("/api/v1/requests/{request_id}/escalate")
async def escalate(request: web.Request) -> web.Response:
    """Escalate to the owning team: their ticket's priority goes up and they are told."""
    body = await read_model(request, EscalateBody)
    event = await handlers.escalate_request(
        EscalateRequest(
            request_id=_request_id(request),
            by=request[IDENTITY].user,
            reason=body.reason,
            urgency=body.urgency,
        ),
        store=request.app[STORE],
        authorize=_authorizer(request),
        correlation_id=request[CORRELATION_ID],
        cooldown=request.app[SETTINGS].escalate_cooldown_seconds,
    )
    return web.json_response(
        {
            "request_id": event.request_id,
            "level": event.level,
            "urgency": event.urgency,
            "reason": event.reason,
        },
        status=202,
    )


@routes.get("/api/v1/requests/{request_id}/plan")
async def get_plan(request: web.Request) -> web.Response:
    """The Terraform plans of the request's actions: each resource's change, sensitive values
    masked, and where each plan stands (awaiting approval, applied, stale...)."""
    found = await _visible(request)
    plans = await queries.get_plans(request.app[POOL], found["request_id"])
    if not plans:
        raise PaoError(
            errors.NO_PLAN,
            f"request {found['request_id']} has no Terraform plan (yet)",
            details=[ErrorDetail(field="request_id", message=found["request_id"])],
        )
    return web.json_response({"request_id": found["request_id"], "plans": plans})


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    body = await read_model(request, DecisionBody) if request.body_exists else DecisionBody()
    if not approve and not body.comment:
        raise PaoError(
            errors.INVALID_INPUT,
            "a rejection needs a comment saying why",
            details=[ErrorDetail(field="/comment", message="required to reject")],
        )
    # A caller who may not see the request learns nothing of it, not even that it exists.
    await _visible(request)
    identity = request[IDENTITY]
    state = await handlers.decide_on_approval(
        _request_id(request),
        handlers.Decider(identity.user, tuple(identity.teams), tuple(identity.roles)),
        approve=approve,
        comment=body.comment,
        plan_id=body.plan_id,
        store=request.app[STORE],
        correlation_id=request[CORRELATION_ID],
    )
    approval = next(
        (
            a
            for a in reversed(state.approvals)
            if any(d["by"] == identity.user for d in a.decisions)
        ),
        None,
    )
    return web.json_response(
        {
            "request_id": state.request_id,
            "status": state.status,
            "approval": queries.approval_view(approval) if approval else None,
        },
        status=202,
    )


@routes.post("/api/v1/requests/{request_id}/approve")
async def approve(request: web.Request) -> web.Response:
    """Approve what the request waits for (an approver only, never the requester)."""
    return await _decide(request, approve=True)


@routes.post("/api/v1/requests/{request_id}/reject")
async def reject(request: web.Request) -> web.Response:
    """Reject what the request waits for, with a comment; the request fails with it."""
    return await _decide(request, approve=False)


@routes.get("/api/v1/approvals")
async def list_approvals(request: web.Request) -> web.Response:
    """What waits for the caller's approval."""
    identity = request[IDENTITY]
    waiting = await queries.approvals_for(
        read_pool(request.app), viewer_of(identity), roles=tuple(identity.roles)
    )
    return web.json_response({"approvals": waiting})
