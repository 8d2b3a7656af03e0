"""The fulfilment jobs, one handler each: execute an action, poll its ticket, write to a ticket.

Each handler ends in one transaction that records what happened (a report on the request's
fulfilment stream) together with what the job queue does next (finish, retry later, poll), so a
worker killed at any instant leaves either the step undone, to be run again, or all of it done.
A step run again finds what an earlier run left: a run already started is not started twice,
and an executor looks up its side effect (a ticket by label, an idempotency key) before acting.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from pao.contracts import events as ev
from pao.contracts.events import FALLBACK, MANUAL
from pao.fulfillment import jobs, ledger, provisioning
from pao.fulfillment.breakers import Breakers, Parked
from pao.fulfillment.context import real_secrets, run_context, secret_forms, secrets_used
from pao.fulfillment.definitions import Definitions
from pao.fulfillment.executors import (
    DEFAULT_REJECTED,
    ActionError,
    Executor,
    JiraExecutor,
    RunKey,
    TerraformExecutor,
    TicketOpen,
)
from pao.fulfillment.terraform import Interrupted, StalePlan, TerraformError
from pao.shared import metrics, tracing
from pao.shared.eventstore import EventStore
from pao.shared.secrets import SecretNotFound, SecretProvider
from pao.spec.lifecycle import actions_for, manual_ticket
from pao.spec.rendering import RenderError, redact_value, render_spec, render_value

log = structlog.get_logger(__name__)

#: How long an execution waits for the catalog event carrying its item's definition.
DEFINITION_PATIENCE = timedelta(minutes=10)
_COMMENT_ATTEMPTS = 10
_NOT_TO_EXECUTE = ledger.FINISHED | {"awaiting_manual", "planned", "applying"}


@dataclass
class Parts:
    """What the job handlers need, wired once by the service's bootstrap."""

    pool: asyncpg.Pool
    store: EventStore
    definitions: Definitions
    executors: dict[str, Executor]
    #: the executor that follows and writes to tickets; None without a JIRA
    manual: JiraExecutor | None
    breakers: Breakers
    secrets: SecretProvider
    system: dict[str, Any]
    environments: dict[str, dict[str, Any]]
    poll_seconds: float | None = None
    default_poll_seconds: float = 60.0
    #: how long an automated action waits behind an open breaker before it fails for good
    park_limit_seconds: float = 600.0


Then = Callable[[asyncpg.Connection, ledger.Fulfillment], Awaitable[None]]


def backoff(attempt: int, policy: dict[str, Any]) -> float:
    """Seconds before `attempt + 1`: exponential from the policy's initial value, with jitter."""
    initial = float(policy.get("initial_backoff_seconds", 2))
    ceiling = float(policy.get("max_backoff_seconds", 300))
    return min(ceiling, initial * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def action_definition(item: dict[str, Any], name: str, kind: str = "create") -> dict[str, Any]:
    """An action a request of `kind` runs; the fallback is the manual ticket that stands in
    for a failure, and `manual` the same ticket standing in for the item's actions (a request
    in manual mode)."""
    if name in (FALLBACK, MANUAL):
        return manual_ticket(item, name)
    return next(a for a in actions_for(item, kind) if a["name"] == name)


def finish(job: jobs.Job, error: str | None = None) -> Then:
    async def then(conn: asyncpg.Connection, _: ledger.Fulfillment) -> None:
        await jobs.finish(conn, job, error=error)

    return then


async def settle(parts: Parts, job: jobs.Job, report: ev.ActionReport, then: Then) -> None:
    """Record `report` and, in the same transaction, what the job queue does next."""

    recorded: list[ledger.Fulfillment] = []

    async def step(conn: asyncpg.Connection, fulfillment: ledger.Fulfillment) -> None:
        run = fulfillment.runs.get(report.action)
        await ledger.record(conn, parts.store, fulfillment, report)
        await then(conn, fulfillment)
        recorded[:] = [fulfillment] if run is not None else []

    await ledger.write(parts.pool, parts.store, job.request_id, step)
    if recorded:  # counted once the transaction committed
        _count(job, report, recorded[0])


#: The reports that end an action's run, as the outcome label of its metrics.
_OUTCOMES = {
    ev.ExecutionSucceeded: "succeeded",
    ev.ExecutionFailed: "failed",
    ev.ExecutionSkipped: "skipped",
}


def _count(job: jobs.Job, report: ev.ActionReport, fulfillment: ledger.Fulfillment) -> None:
    """The action metrics for a report just recorded."""
    kind = fulfillment.runs[report.action].type
    if isinstance(report, ev.ExecutionStarted):
        metrics.ACTION_ATTEMPTS.labels(type=kind).inc()
        if report.action == FALLBACK and report.attempt <= 1:
            metrics.FALLBACKS.labels(item=fulfillment.item_id).inc()
    outcome = _OUTCOMES.get(type(report))
    if outcome is not None:
        metrics.ACTION_RUNS.labels(type=kind, outcome=outcome).inc()
        took = (datetime.now(UTC) - job.created_at).total_seconds()
        metrics.ACTION_DURATION.labels(type=kind, outcome=outcome).observe(max(took, 0.0))


def _about(job: jobs.Job) -> dict[str, Any]:
    return {"request_id": job.request_id, "action": job.action, "generation": job.generation}


async def _current_run(parts: Parts, job: jobs.Job) -> tuple[ledger.Fulfillment, ledger.Run] | None:
    fulfillment = await ledger.load(parts.pool, job.request_id)
    run = fulfillment.runs.get(job.action) if fulfillment else None
    if fulfillment is None or run is None or run.generation != job.generation:
        return None
    tracing.correlate(fulfillment.correlation_id)
    return fulfillment, run


async def park(parts: Parts, job: jobs.Job, parked: Parked) -> None:
    """The system is out: run the job again once its breaker may let a call through."""
    log.warning("system unavailable; work parked", system=parked.system, retry_in=parked.wait)
    await jobs.reschedule(parts.pool, job, delay=parked.wait, error=str(parked))


async def park_or_give_up(
    parts: Parts, job: jobs.Job, definition: dict[str, Any], parked: Parked
) -> None:
    """Park an automated action's work, unless it has waited for its system longer than the
    platform's limit (or the action's own timeout): then it fails for good, and the item's
    manual fallback, if any, takes over. A ticket's work only waits: a person is behind it."""
    waited = (datetime.now(UTC) - job.created_at).total_seconds()
    limit = min(parts.park_limit_seconds, float(definition.get("timeout_seconds") or "inf"))
    if definition["type"] == "jira" or waited + parked.wait <= limit:
        await park(parts, job, parked)
        return
    error = (
        f"{parked.system} was unavailable for {waited:.0f} s (its breaker stayed open); "
        "the action stopped waiting"
    )
    log.warning("system unavailable for too long; action failed", system=parked.system)
    failed = ev.ExecutionFailed(**_about(job), error=error, attempts=job.attempt)
    await settle(parts, job, failed, finish(job, error))


async def execute(parts: Parts, job: jobs.Job) -> None:
    """Render the action's spec and run it once: started, then finished, failed, retried later,
    or waiting on a ticket."""
    current = await _current_run(parts, job)
    if current is None or current[0].aborted or current[1].status in _NOT_TO_EXECUTE:
        await jobs.finish(parts.pool, job)  # stale or done already: a duplicate job
        return
    fulfillment, run = current
    item = await parts.definitions.get(fulfillment.item_hash)
    if item is None:
        await _wait_for_definition(parts, job, fulfillment.item_hash)
        return
    definition = action_definition(item, job.action, fulfillment.kind)
    tracing.annotate({"pao.action_type": definition["type"]})
    kind = definition["type"]
    names = secrets_used(definition[kind]) | secrets_used(definition.get("when", ""))
    context = run_context(fulfillment, item, system=parts.system, environments=parts.environments)
    hidden: list[str] = []  # the run's secret values, in every form an answer may echo them
    try:
        if "when" in definition and not render_value(definition["when"], context, "when"):
            skipped = ev.ExecutionSkipped(**_about(job), reason="its condition is false")
            await settle(parts, job, skipped, finish(job))
            return
        shown = render_spec(kind, definition[kind], context, f"/{kind}")
        spec = shown
        if names:
            secrets = await real_secrets(item, names, parts.secrets)
            hidden = secret_forms(secrets[name] for name in names)
            real = run_context(
                fulfillment,
                item,
                system=parts.system,
                environments=parts.environments,
                secrets=secrets,
            )
            spec = render_spec(kind, definition[kind], real, f"/{kind}")
    except (RenderError, SecretNotFound) as exc:
        failed = ev.ExecutionFailed(**_about(job), error=str(exc), attempts=job.attempt)
        await settle(parts, job, failed, finish(job, str(exc)))
        return
    if run.status != "running" or run.attempt != job.attempt:
        started = ev.ExecutionStarted(
            **_about(job), action_type=kind, attempt=job.attempt, spec=shown
        )
        await settle(parts, job, started, held(job))
    if kind == "terraform":
        await _plan(parts, job, fulfillment, definition, spec, replaces=None, hidden=hidden)
        return
    executor = parts.executors[kind]
    key = RunKey(
        job.request_id,
        job.action,
        job.generation,
        fulfillment.correlation_id,
        environment=fulfillment.environment,
    )
    try:
        async with parts.breakers.guard(executor.system_of(spec)):
            outcome = await executor.run(spec, key)
    except Parked as parked:
        await park_or_give_up(parts, job, definition, parked)
    except ActionError as exc:
        # An API may echo what it was sent: no secret of the run reaches an event or a job row.
        error = ActionError(
            redact_value(exc.message, hidden), transient=exc.transient, retry_after=exc.retry_after
        )
        await _failed_attempt(parts, job, definition, error)
    else:
        if isinstance(outcome, TicketOpen):
            await _ticket_opened(parts, job, definition, outcome)
        else:
            outputs = redact_value(outcome.outputs, hidden)
            done = ev.ExecutionSucceeded(**_about(job), outputs=outputs)
            await settle(parts, job, done, finish(job))


def held(job: jobs.Job) -> Then:
    """Nothing more than the report, recorded only while the job's claim holds: a worker that
    froze past its lease must not record a start over what its successor recorded since."""

    async def then(conn: asyncpg.Connection, _: ledger.Fulfillment) -> None:
        await jobs.hold(conn, job)

    return then


async def _wait_for_definition(parts: Parts, job: jobs.Job, item_hash: str) -> None:
    if datetime.now(UTC) - job.created_at > DEFINITION_PATIENCE:
        error = f"the catalog never published the pinned item definition {item_hash}"
        failed = ev.ExecutionFailed(**_about(job), error=error, attempts=job.attempt)
        await settle(parts, job, failed, finish(job, error))
        return
    log.info("waiting for the item definition", item_hash=item_hash)
    await jobs.reschedule(parts.pool, job, delay=1.0, error=f"waiting for {item_hash}")


async def _ticket_opened(
    parts: Parts, job: jobs.Job, definition: dict[str, Any], ticket: TicketOpen
) -> None:
    """Record the ticket and schedule its first poll; an abort that came meanwhile gets its
    comment on the ticket instead."""

    async def follow(conn: asyncpg.Connection, fulfillment: ledger.Fulfillment) -> None:
        if fulfillment.aborted:
            await jobs.schedule(
                conn,
                request_id=job.request_id,
                action=job.action,
                generation=job.generation,
                kind="comment",
                dedupe_key=f"comment:aborted:{job.request_id}:{job.action}:{ticket.key}",
                payload={
                    "key": ticket.key,
                    "comment": f"PAO request {job.request_id} was aborted while this issue was "
                    "being opened. No further work is needed on this issue.",
                },
            )
        else:
            await jobs.schedule(
                conn,
                request_id=job.request_id,
                action=job.action,
                generation=job.generation,
                kind="poll",
                dedupe_key=f"poll:{job.request_id}:{job.action}:{ticket.key}",
                payload={"key": ticket.key, "since": datetime.now(UTC).isoformat()},
                delay=poll_interval(parts, definition),
            )
        await jobs.finish(conn, job)

    opened = ev.ManualTicketOpened(**_about(job), system="jira", key=ticket.key, url=ticket.url)
    await settle(parts, job, opened, follow)


async def _failed_attempt(
    parts: Parts, job: jobs.Job, definition: dict[str, Any], exc: ActionError
) -> None:
    policy = definition.get("retry") or {}
    if exc.transient and job.attempt < int(policy.get("max_attempts", 3)):
        delay = max(exc.retry_after or 0.0, backoff(job.attempt, policy))
        at = datetime.now(UTC) + timedelta(seconds=delay)

        async def again(conn: asyncpg.Connection, _: ledger.Fulfillment) -> None:
            await jobs.reschedule(
                conn, job, delay=delay, attempt=job.attempt + 1, error=exc.message
            )

        retry = ev.ExecutionRetryScheduled(
            **_about(job), attempt=job.attempt, error=exc.message, next_attempt_at=at.isoformat()
        )
        await settle(parts, job, retry, again)
        return
    failed = ev.ExecutionFailed(**_about(job), error=exc.message, attempts=job.attempt)
    await settle(parts, job, failed, finish(job, exc.message))


def poll_interval(parts: Parts, definition: dict[str, Any]) -> float:
    """How often a ticket is read: the setting, else the action's, else the default."""
    if parts.poll_seconds is not None:
        return parts.poll_seconds
    spec = definition.get("jira") or {}
    return float(spec.get("poll_interval_seconds") or parts.default_poll_seconds)


async def poll(parts: Parts, job: jobs.Job) -> None:
    """Read the run's ticket: done, rejected, timed out, or read again later."""
    current = await _current_run(parts, job)
    if current is None or current[0].aborted or current[1].status != "awaiting_manual":
        await jobs.finish(parts.pool, job)
        return
    fulfillment, _ = current
    key = job.payload["key"]
    if parts.manual is None:
        error = f"no JIRA is configured (PAO_JIRA_URL) to follow {key}"
        failed = ev.ExecutionFailed(**_about(job), error=error, attempts=job.attempt)
        await settle(parts, job, failed, finish(job, error))
        return
    item = await parts.definitions.get(fulfillment.item_hash)
    if item is None:
        await _wait_for_definition(parts, job, fulfillment.item_hash)
        return
    definition = action_definition(item, job.action, fulfillment.kind)
    tracing.annotate({"pao.action_type": definition["type"]})
    try:
        async with parts.breakers.guard("jira"):
            with metrics.JIRA_POLL_DURATION.time():
                issue = await parts.manual.read(key)
    except Parked as parked:
        await park(parts, job, parked)
        return
    except ActionError as exc:
        if exc.transient:
            await jobs.reschedule(
                parts.pool, job, delay=poll_interval(parts, definition), error=exc.message
            )
        else:
            failed = ev.ExecutionFailed(**_about(job), error=exc.message, attempts=job.attempt)
            await settle(parts, job, failed, finish(job, exc.message))
        return
    rejected = (definition.get("jira") or {}).get("rejected_statuses") or DEFAULT_REJECTED
    error = None
    if issue.status in rejected:
        error = f"{key} was closed as {issue.status}"
    elif issue.status_category == "done":
        outputs = {"key": issue.key, "url": issue.url, "id": issue.id, "status": issue.status}
        done = ev.ExecutionSucceeded(**_about(job), outputs=outputs)
        await settle(parts, job, done, finish(job))
        return
    elif _timed_out(job, definition):
        error = f"{key} was not done within {definition['timeout_seconds']} seconds"
    if error is None:
        await jobs.reschedule(parts.pool, job, delay=poll_interval(parts, definition))
        return
    failed = ev.ExecutionFailed(**_about(job), error=error, attempts=job.attempt)
    await settle(parts, job, failed, finish(job, error))


def _timed_out(job: jobs.Job, definition: dict[str, Any]) -> bool:
    limit = definition.get("timeout_seconds")
    if not limit:
        return False
    since = datetime.fromisoformat(job.payload["since"])
    return datetime.now(UTC) - since > timedelta(seconds=limit)


async def comment(parts: Parts, job: jobs.Job) -> None:
    """Write a comment (and a new priority) to a ticket, then record that it was written."""
    if parts.manual is None:
        await jobs.finish(parts.pool, job, error="no JIRA configured")
        return
    key, text = job.payload["key"], job.payload["comment"]
    priority = job.payload.get("priority")
    try:
        async with parts.breakers.guard("jira"):
            await parts.manual.update(key, comment=text, priority=priority)
    except Parked as parked:
        await park(parts, job, parked)
        return
    except ActionError as exc:
        if exc.transient and job.attempt < _COMMENT_ATTEMPTS:
            await jobs.reschedule(
                parts.pool,
                job,
                delay=backoff(job.attempt, {}),
                attempt=job.attempt + 1,
                error=exc.message,
            )
        else:
            await jobs.finish(parts.pool, job, error=exc.message)
        return
    written = ev.TicketCommented(**_about(job), key=key, comment=text, priority=priority)
    await settle(parts, job, written, finish(job))


async def _rendered(
    parts: Parts, fulfillment: ledger.Fulfillment, item: dict[str, Any], definition: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The action's spec with real secrets, for the executor's own call, and the forms of those
    secrets to redact from what the call reports."""
    kind = definition["type"]
    names = secrets_used(definition[kind])
    secrets = await real_secrets(item, names, parts.secrets) if names else None
    context = run_context(
        fulfillment, item, system=parts.system, environments=parts.environments, secrets=secrets
    )
    hidden = secret_forms(secrets[name] for name in names) if secrets else []
    return render_spec(kind, definition[kind], context, f"/{kind}"), hidden


async def _not_run(
    parts: Parts, job: jobs.Job, definition: dict[str, Any], exc: Exception, hidden: list[str]
) -> None:
    """A Terraform step that did not get to the end: parked behind its breaker, or an attempt
    that failed (retried later if the error may pass). Terraform quotes values in its errors
    (a failed condition, a provisioner's output): the run's secrets are redacted, however short."""
    if isinstance(exc, Parked):
        await park_or_give_up(parts, job, definition, exc)
    elif isinstance(exc, TerraformError):
        message = redact_value(f"Terraform: {exc}", hidden)
        await _failed_attempt(parts, job, definition, ActionError(message, transient=exc.transient))
    else:
        assert isinstance(exc, ActionError)
        error = ActionError(
            redact_value(exc.message, hidden), transient=exc.transient, retry_after=exc.retry_after
        )
        await _failed_attempt(parts, job, definition, error)


def _terraform(parts: Parts) -> TerraformExecutor:
    executor = parts.executors["terraform"]
    assert isinstance(executor, TerraformExecutor)
    return executor


def _watchers(parts: Parts, job: jobs.Job, hidden: list[str]):
    """What a Terraform run reports as it goes (the run's secrets redacted), and how it learns
    of an abort."""

    async def on_message(entry: dict[str, Any]) -> None:
        logged = ev.ExecutionLogged(
            **_about(job),
            level={"warn": "warning"}.get(entry["level"], entry["level"]),
            message=redact_value(entry["message"], hidden)[:2000],
            address=entry.get("address"),
        )
        try:
            await ledger.write(
                parts.pool,
                parts.store,
                job.request_id,
                lambda conn, f: ledger.record(conn, parts.store, f, logged),
            )
        except Exception as exc:  # noqa: BLE001 - a lost log line must not stop the run
            log.warning("a Terraform log line was not recorded", error=str(exc))

    async def should_stop() -> bool:
        return bool(
            await parts.pool.fetchval(
                "SELECT aborted FROM fulfillment_requests WHERE request_id = $1", job.request_id
            )
        )

    return on_message, should_stop


async def _release_orphaned_lock(parts: Parts, workspace: str) -> None:
    """A worker that died mid-run may have left its session holding the state lock."""
    runner = _terraform(parts).runner
    try:
        released = await runner.release_lock(
            workspace, is_orphan=await provisioning.orphan_check(parts.pool)
        )
    except Exception as exc:  # noqa: BLE001 - the run itself then waits for the lock
        log.warning("could not check the state lock", workspace=workspace, error=str(exc))
        return
    if released:
        log.warning("released a state lock its dead run left", workspace=workspace)


async def _plan(
    parts: Parts,
    job: jobs.Job,
    fulfillment: ledger.Fulfillment,
    definition: dict[str, Any],
    spec: dict[str, Any],
    *,
    replaces: str | None,
    hidden: list[str],
) -> None:
    """Plan the action in its resource's workspace and store the plan; the request decides
    what follows (an approval, or the apply)."""
    executor = _terraform(parts)
    workspace = provisioning.workspace_of(fulfillment, job.action)
    on_message, should_stop = _watchers(parts, job, hidden)
    try:
        async with parts.breakers.guard("terraform"):
            await _release_orphaned_lock(parts, workspace)
            plan = await executor.runner.plan(
                await executor.module_dir(spec, fulfillment.item_hash),
                spec.get("variables") or {},
                workspace=workspace,
                destroy=provisioning.is_destroy(definition, fulfillment),
                on_message=on_message,
                should_stop=should_stop,
                run_tag=provisioning.run_tag(job),
            )
    except (Parked, TerraformError, ActionError) as exc:
        await _not_run(parts, job, definition, exc, hidden)
        return
    summary = provisioning.summary_of(plan, provisioning.new_plan_id())
    # A secret passed to a variable the module does not mark sensitive shows in the changes.
    summary = summary.model_copy(update={"changes": redact_value(summary.changes, hidden)})

    async def keep(conn: asyncpg.Connection, _: ledger.Fulfillment) -> None:
        await provisioning.store_plan(conn, job, workspace=workspace, plan=plan, summary=summary)
        await jobs.finish(conn, job)

    planned = ev.ExecutionPlanned(**_about(job), plan=summary, replaces=replaces)
    await settle(parts, job, planned, keep)


async def apply(parts: Parts, job: jobs.Job) -> None:
    """Apply exactly the stored plan the request asked for; plan again if it went stale."""
    current = await _current_run(parts, job)
    plan_id = job.payload["plan_id"]
    if current is None or current[0].aborted or current[1].status in ledger.FINISHED:
        await jobs.finish(parts.pool, job)
        return
    fulfillment, run = current
    stored = await provisioning.stored_plan(parts.pool, plan_id)
    if stored is None or stored["replaced_by"] or stored["plan_file"] is None:
        await jobs.finish(parts.pool, job, error=f"plan {plan_id} is no longer current")
        return
    item = await parts.definitions.get(fulfillment.item_hash)
    if item is None:
        await _wait_for_definition(parts, job, fulfillment.item_hash)
        return
    definition = action_definition(item, job.action, fulfillment.kind)
    tracing.annotate({"pao.action_type": definition["type"]})
    try:
        spec, hidden = await _rendered(parts, fulfillment, item, definition)
    except (RenderError, SecretNotFound) as exc:
        failed = ev.ExecutionFailed(**_about(job), error=str(exc), attempts=job.attempt)
        await settle(parts, job, failed, finish(job, str(exc)))
        return
    if run.status != "applying" or run.attempt != job.attempt:
        applying = ev.ExecutionApplying(**_about(job), plan_id=plan_id, attempt=job.attempt)
        await settle(parts, job, applying, held(job))
    executor = _terraform(parts)
    on_message, should_stop = _watchers(parts, job, hidden)
    try:
        async with parts.breakers.guard("terraform"):
            await _release_orphaned_lock(parts, stored["workspace"])
            applied = await executor.runner.apply_plan(
                await executor.module_dir(spec, fulfillment.item_hash),
                stored["plan_file"],
                workspace=stored["workspace"],
                outputs=() if stored["destroy"] else spec.get("outputs") or (),
                on_message=on_message,
                should_stop=should_stop,
                run_tag=provisioning.run_tag(job),
            )
    except StalePlan:
        log.info("the plan no longer applies; planning again", plan_id=plan_id)
        await _plan(parts, job, fulfillment, definition, spec, replaces=plan_id, hidden=hidden)
        return
    except Interrupted as exc:
        error = redact_value(
            f"Terraform was interrupted (the request was aborted): {exc.message}", hidden
        )
        failed = ev.ExecutionFailed(**_about(job), error=error, attempts=job.attempt)
        await settle(parts, job, failed, finish(job, error))
        return
    except (Parked, TerraformError, ActionError) as exc:
        await _not_run(parts, job, definition, exc, hidden)
        return

    async def done_with_plan(conn: asyncpg.Connection, _: ledger.Fulfillment) -> None:
        await provisioning.mark_applied(conn, plan_id)
        await jobs.finish(conn, job)

    # Sensitive outputs are only named; a plain one may still echo a secret the run was given.
    outputs = redact_value(provisioning.shown_outputs(applied.outputs, applied.sensitive), hidden)
    done = ev.ExecutionSucceeded(**_about(job), outputs=outputs)
    await settle(parts, job, done, done_with_plan)


#: The handler of each kind of job.
STEPS: dict[str, Callable[[Parts, jobs.Job], Awaitable[None]]] = {
    "execute": execute,
    "apply": apply,
    "poll": poll,
    "comment": comment,
}


async def run_job(parts: Parts, job: jobs.Job) -> None:
    """Run a job's step; traced, inside an action span continuing the trace that scheduled it."""
    step = STEPS[job.kind]
    if not tracing.enabled():
        await step(parts, job)
        return
    attributes = {
        "pao.action": job.action,
        "pao.request_id": job.request_id,
        "pao.job.kind": job.kind,
        "pao.attempt": job.attempt,
        "pao.generation": job.generation,
    }
    with tracing.span(
        f"action {job.kind}", parent=tracing.context_of(job.traceparent), attributes=attributes
    ):
        await step(parts, job)
