"""Terraform actions in two steps: plan (and store the plan), then apply exactly that plan.

A Terraform action of a request works in its resource's workspace (state in PostgreSQL), so an
update plans against what the create made and a decommission destroys it. The `execute` job
plans and stores the plan file in PostgreSQL, where any worker can read it; the request decides
whether the plan needs an approval and then asks for it to be applied (`ApplyDispatched`); the
`apply` job applies the stored file and nothing else. A plan that no longer applies because the
state moved on is planned again and goes back to the request, which asks for approval again if
its policy says so: never a blind apply.

While Terraform runs, its machine-readable messages become log entries of the request as they
arrive; an abort interrupts it (SIGINT, then a kill after a grace period); a state lock left by
a worker that died is released once its job has passed to another worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from pao.contracts import events as ev
from pao.fulfillment import jobs, ledger
from pao.fulfillment.terraform import Plan
from pao.spec.lifecycle import destroys
from pao.spec.rendering import SECRET_MASK

#: A plan with more resource changes than this is summarised in its event.
MAX_CHANGES_IN_EVENT = 200
_RUN_TAG_PREFIX = "job"


def workspace_of(fulfillment: ledger.Fulfillment, action: str) -> str:
    """The workspace of an action of the request's resource (one per resource and action)."""
    return f"res-{fulfillment.resource_id or fulfillment.request_id}-{action}"


def run_tag(job: jobs.Job) -> str:
    """What the job's Terraform sessions carry, to tell a live run's lock from an orphan's."""
    return f"{_RUN_TAG_PREFIX}{job.id}:{job.claim}"


async def orphan_check(pool: asyncpg.Pool) -> Callable[[str | None], bool]:
    """Whether a lock holder's run tag names a job claim that no longer holds its job (its
    worker died or lost the lease): such a session belongs to nobody and may be ended."""
    live = {
        f"{_RUN_TAG_PREFIX}{row['id']}:{row['claim']}"
        for row in await pool.fetch(
            "SELECT id, claim FROM fulfillment_jobs WHERE state = 'running' "
            "AND lease_until > now() AND claim IS NOT NULL"
        )
    }

    def is_orphan(tag: str | None) -> bool:
        return tag is not None and tag.startswith(_RUN_TAG_PREFIX) and tag not in live

    return is_orphan


def summary_of(plan: Plan, plan_id: str) -> ev.PlanSummary:
    changes = plan.changes[:MAX_CHANGES_IN_EVENT]
    return ev.PlanSummary(
        plan_id=plan_id,
        destroy=plan.destroy,
        counts=dict(plan.counts),
        changes=changes,
        truncated=len(plan.changes) - len(changes),
    )


async def store_plan(
    conn: asyncpg.Connection,
    job: jobs.Job,
    *,
    workspace: str,
    plan: Plan,
    summary: ev.PlanSummary,
) -> None:
    """Keep the plan file where any worker finds it; forget the files of the action's earlier
    plans, which will never be applied now."""
    await conn.execute(
        "INSERT INTO terraform_plans (plan_id, request_id, action, generation, workspace, "
        "destroy, plan_file, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        summary.plan_id,
        job.request_id,
        job.action,
        job.generation,
        workspace,
        plan.destroy,
        plan.plan_file,
        summary.model_dump(mode="json"),
    )
    # Any earlier plan of the action that was never applied will not be: the newest is used.
    await conn.execute(
        "UPDATE terraform_plans SET replaced_by = $3, plan_file = NULL "
        "WHERE request_id = $1 AND action = $2 AND plan_id <> $3 AND applied_at IS NULL "
        "AND replaced_by IS NULL",
        job.request_id,
        job.action,
        summary.plan_id,
    )


async def forget_plans(conn: asyncpg.Connection, request_id: str) -> None:
    """The request ended without applying its plans: their files (which hold variable values)
    are of no more use."""
    await conn.execute(
        "UPDATE terraform_plans SET plan_file = NULL WHERE request_id = $1 AND applied_at IS NULL "
        "AND plan_file IS NOT NULL",
        request_id,
    )


async def stored_plan(pool: asyncpg.Pool, plan_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT plan_id, request_id, action, generation, workspace, destroy, plan_file, "
        "applied_at, replaced_by FROM terraform_plans WHERE plan_id = $1",
        plan_id,
    )


async def mark_applied(conn: asyncpg.Connection, plan_id: str) -> None:
    """An applied plan's file is of no more use, and it holds variable values: drop it."""
    await conn.execute(
        "UPDATE terraform_plans SET applied_at = now(), plan_file = NULL WHERE plan_id = $1",
        plan_id,
    )


def shown_outputs(outputs: dict[str, Any], sensitive: frozenset[str]) -> dict[str, Any]:
    """The outputs as they are recorded: a sensitive one only as the mask."""
    return {**outputs, **dict.fromkeys(sensitive, SECRET_MASK)}


def is_destroy(definition: dict[str, Any], fulfillment: ledger.Fulfillment) -> bool:
    return destroys(definition, fulfillment.kind)


def new_plan_id() -> str:
    return f"plan-{uuid.uuid4().hex[:12]}"
