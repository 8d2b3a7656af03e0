"""The fulfilment worker: runs due jobs with a bounded pool, behind a breaker per system.

Transient failures are retried with exponential backoff and jitter up to the action's policy;
while a system's breaker is open its jobs are parked (rescheduled for when it may be back,
without using up attempts), so an outage delays work instead of failing it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from pao.contracts import events as ev
from pao.fulfillment import jobs
from pao.fulfillment.context import base_context, masked, secrets_used, with_secrets
from pao.fulfillment.executors import (
    DEFAULT_REJECTED,
    ActionError,
    JiraExecutor,
    RestExecutor,
    TerraformExecutor,
    idempotency_label,
)
from pao.request.aggregate import FALLBACK, TERMINAL, RequestState, stream_of
from pao.request.states import RequestStates
from pao.shared.eventstore import ConcurrencyConflict, EventStore
from pao.shared.lifecycle import pause
from pao.shared.secrets import SecretNotFound, SecretProvider
from pao.spec.rendering import RenderError, render_value

log = structlog.get_logger(__name__)

PRIORITY_FOR_URGENCY = {"low": "Low", "normal": "Medium", "high": "High", "critical": "Highest"}


@dataclass
class Parts:
    """What the worker needs, wired once."""

    pool: asyncpg.Pool
    store: EventStore
    jira: JiraExecutor | None
    terraform: TerraformExecutor | None
    rest: RestExecutor
    secrets: SecretProvider
    system: dict[str, Any]
    environments: dict[str, dict[str, Any]]
    poll_seconds: float | None = None
    default_poll_seconds: float = 60.0


def backoff(attempt: int, policy: dict[str, Any]) -> float:
    """Seconds before `attempt + 1`: exponential from the policy's initial value, with jitter."""
    initial = float(policy.get("initial_backoff_seconds", 2))
    ceiling = float(policy.get("max_backoff_seconds", 300))
    return min(ceiling, initial * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class Worker:
    """Claims due jobs and runs them, `concurrency` at a time."""

    def __init__(
        self,
        parts: Parts,
        *,
        concurrency: int = 8,
        threshold: int = 5,
        open_seconds: float = 30.0,
        idle: float = 0.05,
    ) -> None:
        self._parts = parts
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._open_seconds = open_seconds
        self._idle = idle
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=open_seconds,
            exclude=[(ActionError, lambda exc: not exc.transient)],
        )
        self._running: set[asyncio.Task[None]] = set()
        self._states = RequestStates(parts.store)
        self.done = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop`; jobs left running by a dead worker are taken up again first."""
        released = await jobs.release_abandoned(self._parts.pool)
        if released:
            log.warning("jobs of a stopped worker resumed", jobs=released)
        while not stop.is_set():
            free = self._concurrency - len(self._running)
            claimed = await jobs.claim(self._parts.pool, free) if free else []
            for job in claimed:
                task = asyncio.create_task(self._guarded(job))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if not claimed:
                await pause(stop, self._idle)
        if self._running:
            await asyncio.wait(self._running, timeout=30)

    async def run_due(self) -> int:
        """Run every job due now, once (for tests and tools); return how many ran."""
        claimed = await jobs.claim(self._parts.pool, 1_000)
        await asyncio.gather(*(self._guarded(job) for job in claimed))
        return len(claimed)

    async def _guarded(self, job: jobs.Job) -> None:
        async with self._slots:
            structlog.contextvars.bind_contextvars(request_id=job.request_id, action=job.action)
            try:
                await self._run(job)
                self.done += 1
            except Exception as exc:
                log.exception("job failed unexpectedly; retrying later", kind=job.kind)
                await jobs.reschedule(
                    self._parts.pool, job, delay=30.0, error=f"{type(exc).__name__}: {exc}"
                )
            finally:
                structlog.contextvars.unbind_contextvars("request_id", "action")

    async def _load(self, request_id: str) -> RequestState:
        return await self._states.load(request_id)

    async def _append(self, state: RequestState, *events: ev.Event) -> RequestState:
        await self._parts.store.append(
            stream_of(state.request_id),
            [e.new(correlation_id=state.correlation_id, actor="pao-fulfillment") for e in events],
            state.version,
        )
        return await self._load(state.request_id)

    async def _run(self, job: jobs.Job) -> None:
        state = await self._load(job.request_id)
        if not state.exists or (state.status in TERMINAL and job.kind != "comment"):
            await jobs.finish(self._parts.pool, job)
            return
        if job.kind == "execute":
            await self._execute(job, state)
        elif job.kind == "poll":
            await self._poll(job, state)
        else:
            await self._comment(job, state)

    # --- running an action ---------------------------------------------------------------------

    def _definition(self, state: RequestState, name: str) -> dict[str, Any]:
        if name == FALLBACK:
            # The item's fallback: a manual ticket standing in for the automated action.
            spec = state.item["fulfillment"]["fallback"]["jira"]
            return {"name": FALLBACK, "type": "jira", "jira": spec}
        return next(a for a in state.item["fulfillment"]["actions"] if a["name"] == name)

    async def _execute(self, job: jobs.Job, state: RequestState) -> None:
        current = state.action(job.action)
        if current.status in ("succeeded", "skipped", "awaiting_manual", "failed"):
            await jobs.finish(self._parts.pool, job)  # done already: a duplicate job
            return
        definition = self._definition(state, job.action)
        kind = definition["type"]
        context = base_context(
            state, system=self._parts.system, environments=self._parts.environments
        )
        names = secrets_used(definition[kind]) | secrets_used(definition.get("when", ""))
        shown = masked(context, names)
        try:
            if "when" in definition and not render_value(definition["when"], shown, "when"):
                await self._append(
                    state,
                    ev.ActionSkipped(
                        request_id=state.request_id,
                        action=job.action,
                        reason="its condition is false",
                    ),
                )
                await jobs.finish(self._parts.pool, job)
                return
            spec_shown = render_value(definition[kind], shown, f"/{kind}")
            real = (
                await with_secrets(
                    context, names, state.item.get("secrets") or {}, self._parts.secrets
                )
                if names
                else context
            )
            spec = render_value(definition[kind], real, f"/{kind}") if names else spec_shown
        except (RenderError, SecretNotFound) as exc:
            await self._fail(job, state, str(exc))
            return
        if current.status != "running" or current.attempts != job.attempt:
            state = await self._append(
                state,
                ev.ActionStarted(
                    request_id=state.request_id,
                    action=job.action,
                    action_type=kind,
                    attempt=job.attempt,
                    spec=spec_shown,
                ),
            )
        system = self._system_of(kind, spec)
        try:
            breaker = await self._breakers.get_breaker(system)
            async with breaker:
                await self._call(job, state, kind, spec, definition)
        except OpenedState as exc:
            await self._park(job, system, exc.opened_at)
        except ActionError as exc:
            if exc.transient and breaker.context.state == "opened":
                # This failure opened the breaker (or a trial call found the system still
                # down): the system is out, not this action; it waits without losing an attempt.
                await self._park(job, system, breaker.context.opened_at or time.time())
            else:
                await self._failed_attempt(job, state, definition, exc, names, context)
        except ConcurrencyConflict:
            await jobs.reschedule(self._parts.pool, job, delay=0.1)

    def _system_of(self, kind: str, spec: dict[str, Any]) -> str:
        return (
            "jira"
            if kind == "jira"
            else "terraform"
            if kind == "terraform"
            else RestExecutor.system_of(spec)
        )

    async def _call(
        self,
        job: jobs.Job,
        state: RequestState,
        kind: str,
        spec: dict[str, Any],
        definition: dict[str, Any],
    ) -> None:
        if kind == "jira":
            if self._parts.jira is None:
                raise ActionError("no JIRA is configured (PAO_JIRA_URL)", transient=False)
            issue = await self._parts.jira.open_issue(
                spec,
                request_id=state.request_id,
                action=job.action,
                correlation_id=state.correlation_id,
                generation=state.action(job.action).generation,
            )
            try:
                await self._append(
                    state,
                    ev.ActionAwaitingManual(
                        request_id=state.request_id,
                        action=job.action,
                        system="jira",
                        key=issue.key,
                        url=issue.url,
                    ),
                )
            except ConcurrencyConflict:
                state = await self._load(state.request_id)
                if state.status == "aborted":  # aborted while the issue was being opened
                    await self._parts.jira.update(issue.key, comment=_abort_comment(state))
                    await jobs.finish(self._parts.pool, job)
                    return
                raise
            async with self._parts.pool.acquire() as conn, conn.transaction():
                await jobs.schedule(
                    conn,
                    request_id=state.request_id,
                    action=job.action,
                    kind="poll",
                    dedupe_key=f"poll:{state.request_id}:{job.action}:{issue.key}",
                    payload={"key": issue.key, "since": datetime.now(UTC).isoformat()},
                    delay=self._poll_interval(definition),
                )
                await jobs.finish(conn, job)
            return
        if kind == "terraform":
            if self._parts.terraform is None:
                raise ActionError("Terraform is not available", transient=False)
            outputs = await self._parts.terraform.apply(
                spec, request_id=state.request_id, action=job.action
            )
        else:
            outputs = await self._parts.rest.call(
                spec,
                idempotency_key=idempotency_label(
                    state.request_id, job.action, state.action(job.action).generation
                ),
            )
        await self._append(
            state,
            ev.ActionSucceeded(request_id=state.request_id, action=job.action, outputs=outputs),
        )
        await jobs.finish(self._parts.pool, job)

    async def _failed_attempt(
        self,
        job: jobs.Job,
        state: RequestState,
        definition: dict[str, Any],
        exc: ActionError,
        names: set[str],
        context: dict[str, Any],
    ) -> None:
        policy = definition.get("retry") or {}
        attempts = int(policy.get("max_attempts", 3))
        message = exc.message
        if exc.transient and job.attempt < attempts:
            delay = max(exc.retry_after or 0.0, backoff(job.attempt, policy))
            at = datetime.now(UTC) + timedelta(seconds=delay)
            await self._append(
                state,
                ev.ActionRetryScheduled(
                    request_id=state.request_id,
                    action=job.action,
                    attempt=job.attempt,
                    error=message,
                    next_attempt_at=at.isoformat(),
                ),
            )
            await jobs.reschedule(
                self._parts.pool, job, delay=delay, attempt=job.attempt + 1, error=message
            )
            return
        await self._fail(job, state, message)

    async def _fail(self, job: jobs.Job, state: RequestState, error: str) -> None:
        await self._append(
            state,
            ev.ActionFailed(
                request_id=state.request_id, action=job.action, error=error, attempts=job.attempt
            ),
        )
        await jobs.finish(self._parts.pool, job, error=error)

    async def _park(self, job: jobs.Job, system: str, opened_at: float) -> None:
        wait = max(0.5, opened_at + self._open_seconds - time.time())
        log.warning("system unavailable; work parked", system=system, retry_in=round(wait, 1))
        await jobs.reschedule(self._parts.pool, job, delay=wait, error=f"{system} breaker open")

    # --- following a manual step ---------------------------------------------------------------

    def _poll_interval(self, definition: dict[str, Any]) -> float:
        if self._parts.poll_seconds is not None:
            return self._parts.poll_seconds
        spec = definition.get("jira") or {}
        return float(spec.get("poll_interval_seconds") or self._parts.default_poll_seconds)

    async def _poll(self, job: jobs.Job, state: RequestState) -> None:
        current = state.action(job.action)
        if current.status != "awaiting_manual":
            await jobs.finish(self._parts.pool, job)
            return
        if self._parts.jira is None:
            await self._fail(
                job, state, f"no JIRA is configured (PAO_JIRA_URL) to follow {job.payload['key']}"
            )
            return
        definition = self._definition(state, job.action)
        key = job.payload["key"]
        try:
            breaker = await self._breakers.get_breaker("jira")
            async with breaker:
                issue = await self._parts.jira.read(key)
        except OpenedState as exc:
            await self._park(job, "jira", exc.opened_at)
            return
        except ActionError as exc:
            if not exc.transient:
                await self._fail(job, state, exc.message)
                return
            await jobs.reschedule(
                self._parts.pool, job, delay=self._poll_interval(definition), error=exc.message
            )
            return
        rejected = (definition.get("jira") or {}).get("rejected_statuses") or DEFAULT_REJECTED
        if issue.status in rejected:
            await self._fail(job, state, f"{key} was closed as {issue.status}")
        elif issue.status_category == "done":
            await self._append(
                state,
                ev.ActionSucceeded(
                    request_id=state.request_id,
                    action=job.action,
                    outputs={
                        "key": issue.key,
                        "url": issue.url,
                        "id": issue.id,
                        "status": issue.status,
                    },
                ),
            )
            await jobs.finish(self._parts.pool, job)
        elif self._timed_out(job, definition):
            await self._fail(
                job, state, f"{key} was not done within {definition['timeout_seconds']} seconds"
            )
        else:
            await jobs.reschedule(self._parts.pool, job, delay=self._poll_interval(definition))

    @staticmethod
    def _timed_out(job: jobs.Job, definition: dict[str, Any]) -> bool:
        limit = definition.get("timeout_seconds")
        if not limit:
            return False
        since = datetime.fromisoformat(job.payload["since"])
        return datetime.now(UTC) - since > timedelta(seconds=limit)

    # --- writing to a ticket -------------------------------------------------------------------

    async def _comment(self, job: jobs.Job, state: RequestState) -> None:
        if self._parts.jira is None:
            await jobs.finish(self._parts.pool, job, error="no JIRA configured")
            return
        key, comment = job.payload["key"], job.payload["comment"]
        priority = job.payload.get("priority")
        try:
            breaker = await self._breakers.get_breaker("jira")
            async with breaker:
                await self._parts.jira.update(key, comment=comment, priority=priority)
        except OpenedState as exc:
            await self._park(job, "jira", exc.opened_at)
            return
        except ActionError as exc:
            if exc.transient and job.attempt < 10:
                await jobs.reschedule(
                    self._parts.pool,
                    job,
                    delay=backoff(job.attempt, {}),
                    attempt=job.attempt + 1,
                    error=exc.message,
                )
            else:
                await jobs.finish(self._parts.pool, job, error=exc.message)
            return
        for _ in range(5):
            try:
                await self._append(
                    state,
                    ev.ManualTicketUpdated(
                        request_id=state.request_id,
                        action=job.action,
                        key=key,
                        comment=comment,
                        priority=priority,
                    ),
                )
                break
            except ConcurrencyConflict:
                state = await self._load(state.request_id)
        await jobs.finish(self._parts.pool, job)


def _abort_comment(state: RequestState) -> str:
    return f"PAO request {state.request_id} was aborted: {state.aborted_reason or 'no reason'}"
