"""The request service's command handlers: load the request, let the aggregate decide, append
what it decided. The gateway calls these; they are the service's public write side."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pao.contracts import errors
from pao.contracts import events as ev
from pao.contracts.commands import AbortRequest, EscalateRequest, RetryRequest, SubmitRequest
from pao.contracts.errors import ErrorDetail, PaoError
from pao.request.aggregate import (
    CommandRejected,
    CommandTooSoon,
    Decider,
    NotAnApprover,
    RequestState,
    decide_abort,
    decide_approval,
    decide_escalate,
    decide_retry,
    fold,
    stream_of,
)
from pao.request.resource import ChangeRefused, ResourceState, decide_change
from pao.request.resource import fold as fold_resource
from pao.request.resource import stream_of as resource_stream_of
from pao.shared.eventstore import ConcurrencyConflict, EventStore
from pao.spec.forms import input_problems
from pao.spec.lifecycle import (
    actions_for,
    applicable_approval,
    check_mode,
    effective_mode,
    expiry_problem,
    manual_ticket,
    runs_manual_ticket,
)
from pao.spec.rendering import (
    RenderError,
    apply_defaults,
    preview_context,
    render_actions,
    render_spec,
)

_ATTEMPTS = 5


@dataclass(frozen=True)
class Ownership:
    """Whose a request is: what an authorisation check needs to know about it."""

    request_id: str
    requester: str
    owner_team: str


Authorize = Callable[[Ownership], None]


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submit: the request, and whether this call created it."""

    request_id: str
    item_id: str
    item_version: str
    created: bool


def _body_hash(cmd: SubmitRequest) -> str:
    chosen = {"mode": cmd.mode} if cmd.mode else {}
    body = json.dumps({"item_id": cmd.item_id, "inputs": cmd.inputs, **chosen}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


async def earlier_submit(cmd: SubmitRequest, *, store: EventStore) -> Submitted | None:
    """The request an Idempotency-Key already names, answered as it was (whatever the catalog
    says now: the item may have changed or gone since)."""
    if not cmd.idempotency_key:
        return None
    row = await store.pool.fetchrow(
        "SELECT body_hash, request_id, item_id, item_version FROM submit_idempotency "
        "WHERE requester = $1 AND key = $2",
        cmd.requester.id,
        cmd.idempotency_key,
    )
    if row is None:
        return None
    if row["body_hash"] != _body_hash(cmd):
        raise _key_reused(cmd.idempotency_key, row["request_id"])
    return Submitted(row["request_id"], row["item_id"], row["item_version"], created=False)


# The key's row and the request's first event are written by one statement.
_CLAIM_KEY = (
    "INSERT INTO submit_idempotency (requester, key, body_hash, request_id, item_id, "
    "item_version) VALUES ($10, $11, $12, $13, $14, $15) "
    "ON CONFLICT DO NOTHING RETURNING request_id"
)


def _key_reused(key: str, request_id: str) -> PaoError:
    return PaoError(
        errors.IDEMPOTENCY_KEY_REUSED,
        f"Idempotency-Key {key!r} was used for request {request_id} with a different body",
        details=[ErrorDetail(field="Idempotency-Key", message="reused with a different body")],
    )


def check_inputs(
    item: dict[str, Any],
    inputs: dict[str, Any],
    requester: ev.Requester,
    *,
    system: dict[str, Any] | None = None,
    environments: dict[str, dict[str, Any]] | None = None,
    default_environment: str = "dev",
    mode: str | None = None,
) -> None:
    """Every problem of the inputs at once (form, then a dry render with the platform's settings,
    as the fulfilment will render, the manual ticket too when the request runs it); nothing is
    stored."""
    problems = input_problems(item["form"]["schema"], inputs)
    if problems:
        raise PaoError(
            errors.INVALID_INPUT,
            f"{len(problems)} problem(s) in the inputs",
            details=[ErrorDetail(field=p.pointer, message=p.message) for p in problems],
        )
    context = preview_context(
        item,
        inputs,
        user=requester.model_dump(),
        system=system,
        environments=environments,
        default_environment=default_environment,
    )
    try:
        render_actions(item, context)
        if runs_manual_ticket(item, mode):
            render_spec("jira", manual_ticket(item)["jira"], context, "/fulfillment/fallback/jira")
    except RenderError as exc:
        raise PaoError(
            errors.INVALID_INPUT,
            f"the inputs cannot be used by the item: {exc.message}",
            details=[ErrorDetail(field=exc.where, message=exc.message)],
        ) from exc


def mode_for(cmd: SubmitRequest, item: dict[str, Any], catalog_mode: str | None) -> str:
    """The mode a new request runs in: the requester's choice among the item's modes, else the
    mode the catalog runs the item in now (an operator's switch, or the item's default)."""
    if cmd.mode is None:
        return effective_mode(item, catalog_mode)
    return check_mode(item, cmd.mode)


def _approval(policy: dict[str, Any] | None, *, environment: str, kind: str):
    applies = applicable_approval(policy, environment=environment, kind=kind)
    return ev.ApprovalPolicy.model_validate(applies) if applies else None


def _submission(
    cmd: SubmitRequest,
    *,
    item: dict[str, Any],
    item_hash: str,
    default_environment: str,
    kind: str,
    resource_id: str,
    mode: str,
    expires_at: str | None = None,
    reason: str | None = None,
    resource_outputs: dict[str, dict[str, Any]] | None = None,
) -> ev.RequestSubmitted:
    """The RequestSubmitted of a new request of `kind` in `mode`: its actions and the approvals
    that apply to them in its environment. The manual ticket of manual mode has no fallback."""
    metadata, fulfillment = item["metadata"], item["fulfillment"]
    resolved = apply_defaults(item["form"]["schema"], cmd.inputs)
    environment = str(resolved.get("environment") or default_environment)
    return ev.RequestSubmitted(
        request_id=str(uuid.uuid4()),
        item_id=metadata["id"],
        item_version=metadata["version"],
        item_hash=item_hash,
        item_name=metadata["name"],
        owner_team=metadata["owner"],
        actions=[
            ev.PlannedAction(
                name=a["name"],
                type=a["type"],
                approval=_approval(a.get("approval"), environment=environment, kind=kind),
            )
            for a in actions_for(item, kind, mode)
        ],
        manual_fallback=(fulfillment.get("fallback") or {}).get("strategy") == "manual"
        and not runs_manual_ticket(item, mode),
        inputs=cmd.inputs,
        resolved_inputs=resolved,
        environment=environment,
        requester=cmd.requester,
        idempotency_key=cmd.idempotency_key,
        kind=kind,  # type: ignore[arg-type]
        resource_id=resource_id,
        approval=_approval(fulfillment.get("approval"), environment=environment, kind=kind),
        expires_at=expires_at,
        reason=reason,
        mode=mode,  # type: ignore[arg-type]
        resource_outputs=resource_outputs or {},
    )


def check_expiry(item: dict[str, Any], expires_at: datetime | None) -> str | None:
    """`expires_at` as stored, once the item's TTL policy allows it."""
    problem = expiry_problem(item, expires_at, now=datetime.now(UTC))
    if problem:
        raise PaoError(
            errors.INVALID_INPUT,
            problem,
            details=[ErrorDetail(field="/expires_at", message=problem)],
        )
    return expires_at.astimezone(UTC).isoformat() if expires_at else None


async def submit_request(
    cmd: SubmitRequest,
    *,
    store: EventStore,
    item: dict[str, Any],
    item_hash: str,
    default_environment: str,
    correlation_id: str | None,
    system: dict[str, Any] | None = None,
    environments: dict[str, dict[str, Any]] | None = None,
    expires_at: datetime | None = None,
    catalog_mode: str | None = None,
) -> Submitted:
    """Validate, then record RequestSubmitted (once per Idempotency-Key and requester); the
    request creates a new resource. `catalog_mode` is the mode the catalog runs the item in
    now (None: its default), used unless the requester chose one."""
    mode = mode_for(cmd, item, catalog_mode)
    check_inputs(
        item,
        cmd.inputs,
        cmd.requester,
        system=system,
        environments=environments,
        default_environment=default_environment,
        mode=mode,
    )
    event = _submission(
        cmd,
        item=item,
        item_hash=item_hash,
        default_environment=default_environment,
        kind="create",
        resource_id=str(uuid.uuid4()),
        mode=mode,
        expires_at=check_expiry(item, expires_at),
    )
    request_id = event.request_id
    metadata = item["metadata"]
    new = event.new(correlation_id=correlation_id, actor=cmd.requester.id)
    if not cmd.idempotency_key:
        await store.append(stream_of(request_id), [new], 0)
    elif (
        await store.start_stream_if_claimed(
            stream_of(request_id),
            new,
            claim=_CLAIM_KEY,
            claim_args=(
                cmd.requester.id,
                cmd.idempotency_key,
                _body_hash(cmd),
                request_id,
                metadata["id"],
                metadata["version"],
            ),
        )
        is None
    ):
        # Another submit with this key got there first.
        earlier = await earlier_submit(cmd, store=store)
        assert earlier is not None
        return earlier
    return Submitted(request_id, metadata["id"], metadata["version"], created=True)


_CLAIM_KEY_ALONE = (
    "INSERT INTO submit_idempotency (requester, key, body_hash, request_id, item_id, "
    "item_version) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING request_id"
)


async def load_resource(store: EventStore, resource_id: str) -> ResourceState:
    """The resource from its stream (the write side), or 404."""
    state = fold_resource(resource_id, await store.read_stream(resource_stream_of(resource_id)))
    if not state.exists:
        raise PaoError(
            errors.RESOURCE_NOT_FOUND,
            f"no resource {resource_id}",
            details=[ErrorDetail(field="resource_id", message=resource_id)],
        )
    return state


async def change_resource(
    cmd: SubmitRequest,
    *,
    resource_id: str,
    kind: str,
    store: EventStore,
    item: dict[str, Any],
    item_hash: str,
    default_environment: str,
    correlation_id: str | None,
    authorize: Authorize,
    system: dict[str, Any] | None = None,
    environments: dict[str, dict[str, Any]] | None = None,
    reason: str | None = None,
    catalog_mode: str | None = None,
) -> Submitted:
    """Start an update (new inputs) or a decommission of a resource: a request of its own,
    recorded in one transaction with the resource's move to updating or decommissioning (at
    the resource's version, so two changes cannot start at once). It runs in the mode the
    requester chose, else in `catalog_mode`, and carries what the resource's earlier requests
    recorded (`resource_outputs`) for its templates."""
    mode = mode_for(cmd, item, catalog_mode)
    for _ in range(_ATTEMPTS):
        resource = await load_resource(store, resource_id)
        authorize(Ownership(resource_id, resource.owner, resource.owner_team))
        if kind == "update":
            environment = cmd.inputs.get("environment", resource.environment)
            if environment != resource.environment:
                raise PaoError(
                    errors.INVALID_INPUT,
                    f"the environment of a resource cannot change ({resource.environment})",
                    details=[ErrorDetail(field="/inputs/environment", message="cannot change")],
                )
        check_inputs(
            item,
            cmd.inputs,
            cmd.requester,
            system=system,
            environments=environments,
            default_environment=resource.environment,
            mode=mode,
        )
        event = _submission(
            cmd,
            item=item,
            item_hash=item_hash,
            default_environment=resource.environment,
            kind=kind,
            resource_id=resource_id,
            mode=mode,
            reason=reason,
            resource_outputs=resource.outputs,
        )
        try:
            moved = decide_change(
                resource,
                kind=kind,
                request_id=event.request_id,
                by=cmd.requester.id,
                inputs=event.resolved_inputs,
                item_version=event.item_version,
                item_hash=item_hash,
                reason=reason,
            )
        except ChangeRefused as exc:
            raise PaoError(
                errors.RESOURCE_STATE_CONFLICT,
                str(exc),
                details=[ErrorDetail(field="state", message=str(resource.state))],
            ) from exc
        try:
            async with store.pool.acquire() as conn, conn.transaction():
                actor = cmd.requester.id
                # The appends first: the transaction's first write orders its events.
                await store.append(
                    resource_stream_of(resource_id),
                    [moved.new(correlation_id=correlation_id, actor=actor)],
                    resource.version,
                    conn=conn,
                )
                await store.append(
                    stream_of(event.request_id),
                    [event.new(correlation_id=correlation_id, actor=actor)],
                    0,
                    conn=conn,
                )
                if cmd.idempotency_key and not await conn.fetchval(
                    _CLAIM_KEY_ALONE,
                    cmd.requester.id,
                    cmd.idempotency_key,
                    _body_hash(cmd),
                    event.request_id,
                    event.item_id,
                    event.item_version,
                ):
                    raise _KeyTaken
        except _KeyTaken:
            earlier = await earlier_submit(cmd, store=store)
            assert earlier is not None
            return earlier
        except ConcurrencyConflict:
            continue  # the resource changed meanwhile: decide again
        return Submitted(event.request_id, event.item_id, event.item_version, created=True)
    raise PaoError(errors.CONCURRENCY_CONFLICT, f"resource {resource_id} keeps changing")


class _KeyTaken(Exception):
    """Another submit with this Idempotency-Key got there first."""


async def decide_on_approval(
    request_id: str,
    decider: Decider,
    *,
    approve: bool,
    comment: str | None,
    store: EventStore,
    correlation_id: str | None,
    plan_id: str | None = None,
) -> RequestState:
    """An approver approves or rejects what the request waits for; returns the request as it
    is afterwards."""
    for _ in range(_ATTEMPTS):
        state = await load_request(store, request_id)
        waiting = state.pending_approval
        if plan_id is not None and (waiting is None or waiting.plan_id != plan_id):
            now = waiting.plan_id if waiting else None
            raise PaoError(
                errors.REQUEST_STATE_CONFLICT,
                f"plan {plan_id} does not wait for approval"
                + (f"; plan {now} does" if now else ""),
                details=[ErrorDetail(field="/plan_id", message=str(now))],
            )
        try:
            decided = decide_approval(state, decider, approve=approve, comment=comment)
        except NotAnApprover as exc:
            raise PaoError(
                errors.NOT_AN_APPROVER,
                str(exc),
                details=[ErrorDetail(field="approver", message=decider.user)],
            ) from exc
        except CommandRejected as exc:
            raise PaoError(
                errors.REQUEST_STATE_CONFLICT,
                str(exc),
                details=[ErrorDetail(field="status", message=str(state.status))],
            ) from exc
        try:
            stored = await store.append(
                stream_of(request_id),
                [e.new(correlation_id=correlation_id, actor=decider.user) for e in decided],
                state.version,
            )
        except ConcurrencyConflict:
            continue
        for envelope in stored:
            state.apply(envelope)
        return state
    raise PaoError(errors.CONCURRENCY_CONFLICT, f"request {request_id} keeps changing")


async def load_request(store: EventStore, request_id: str) -> RequestState:
    """The request's state from its stream (the write side), or 404."""
    state = fold(request_id, await store.read_stream(stream_of(request_id)))
    if not state.exists:
        raise PaoError(
            errors.REQUEST_NOT_FOUND,
            f"no request {request_id}",
            details=[ErrorDetail(field="request_id", message=request_id)],
        )
    return state


async def _decide_and_append(
    store: EventStore,
    request_id: str,
    decide: Callable[[RequestState], ev.Event],
    *,
    authorize: Authorize,
    correlation_id: str | None,
    actor: str,
) -> tuple[RequestState, ev.Event]:
    for _ in range(_ATTEMPTS):
        state = await load_request(store, request_id)
        assert state.submitted is not None
        authorize(Ownership(request_id, state.submitted.requester.id, state.submitted.owner_team))
        try:
            event = decide(state)
        except CommandTooSoon as exc:
            wait = math.ceil(exc.retry_after)
            raise PaoError(
                errors.REQUEST_TOO_SOON,
                str(exc),
                details=[ErrorDetail(field="retry_after_seconds", message=str(wait))],
                headers={"Retry-After": str(wait)},
            ) from exc
        except CommandRejected as exc:
            raise PaoError(
                errors.REQUEST_STATE_CONFLICT,
                str(exc),
                details=[ErrorDetail(field="status", message=str(state.status))],
            ) from exc
        try:
            await store.append(
                stream_of(request_id),
                [event.new(correlation_id=correlation_id, actor=actor)],
                state.version,
            )
        except ConcurrencyConflict:
            continue  # something happened to the request meanwhile: decide again
        return state, event
    raise PaoError(errors.CONCURRENCY_CONFLICT, f"request {request_id} keeps changing")


async def retry_request(
    cmd: RetryRequest,
    *,
    store: EventStore,
    authorize: Authorize,
    correlation_id: str | None,
    cooldown: float = 0.0,
) -> ev.RequestRetried:
    """Re-run the failed actions of a failed request (not within `cooldown` seconds of its
    last retry)."""
    _, event = await _decide_and_append(
        store,
        cmd.request_id,
        lambda s: decide_retry(s, by=cmd.by, now=datetime.now(UTC), cooldown=cooldown),
        authorize=authorize,
        correlation_id=correlation_id,
        actor=cmd.by,
    )
    assert isinstance(event, ev.RequestRetried)
    return event


async def abort_request(
    cmd: AbortRequest,
    *,
    store: EventStore,
    authorize: Authorize,
    correlation_id: str | None,
) -> ev.RequestAborted:
    """Stop a request that has not ended."""
    _, event = await _decide_and_append(
        store,
        cmd.request_id,
        lambda s: decide_abort(s, by=cmd.by, reason=cmd.reason),
        authorize=authorize,
        correlation_id=correlation_id,
        actor=cmd.by,
    )
    assert isinstance(event, ev.RequestAborted)
    return event


async def escalate_request(
    cmd: EscalateRequest,
    *,
    store: EventStore,
    authorize: Authorize,
    correlation_id: str | None,
    cooldown: float = 0.0,
) -> ev.RequestEscalated:
    """Escalate a request one level (not within `cooldown` seconds of its last escalation)."""
    _, event = await _decide_and_append(
        store,
        cmd.request_id,
        lambda s: decide_escalate(
            s,
            by=cmd.by,
            reason=cmd.reason,
            urgency=cmd.urgency,
            now=datetime.now(UTC),
            cooldown=cooldown,
        ),
        authorize=authorize,
        correlation_id=correlation_id,
        actor=cmd.by,
    )
    assert isinstance(event, ev.RequestEscalated)
    return event
