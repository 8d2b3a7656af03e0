"""Which JIRA issue is a run's own: recorded in PostgreSQL around the issue's creation.

A label finds an issue again, but anyone who can file an issue can put a label on it, and the
label (`pao-<request>-<action>`) is easy to guess. So a run writes an opening marker before it
asks JIRA to create its issue, and the key JIRA answered right after. The marker holds a label
of the run's own, random and known only to PAO until the issue carrying it exists (`pao-open-`
and 16 hex digits). A run with a recorded key uses that issue; a run with neither marker nor key
has never asked JIRA and creates its issue without looking; only a run with a marker and no key
(it stopped between JIRA's answer and the record) searches, by its own label, and adopts the
oldest issue carrying it in the action's project, filed by PAO's account when PAO has one
(`JiraExecutor`). Whoever copies the label onto an issue of their own does so after PAO's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Opening:
    """What is recorded of a run's issue as it is about to be opened."""

    #: the key PAO recorded when it created the run's issue, if it got that far
    issue_key: str | None
    #: whether an earlier attempt had already begun to open it (JIRA may have created it)
    resumed: bool
    #: the run's own label, which the issue carries and which only PAO knew before it existed
    label: str


class Tickets:
    """The record of the issues runs opened, in fulfilment's database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def begin(
        self, request_id: str, action: str, generation: int, *, project: str
    ) -> Opening:
        """Write the run's opening marker, committed before JIRA is called; say what an
        earlier attempt left."""
        label = f"pao-open-{secrets.token_hex(8)}"
        row = await self._pool.fetchrow(
            """INSERT INTO fulfillment_tickets (request_id, action, generation, label, project)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (request_id, action, generation) DO NOTHING
               RETURNING issue_key""",
            request_id,
            action,
            generation,
            label,
            project,
        )
        if row is not None:
            return Opening(issue_key=None, resumed=False, label=label)
        earlier = await self._pool.fetchrow(
            "SELECT issue_key, label FROM fulfillment_tickets "
            "WHERE request_id = $1 AND action = $2 AND generation = $3",
            request_id,
            action,
            generation,
        )
        return Opening(issue_key=earlier["issue_key"], resumed=True, label=earlier["label"])

    async def opened(self, request_id: str, action: str, generation: int, issue_key: str) -> None:
        """Record the key of the issue the run created (or adopted)."""
        await self._pool.execute(
            "UPDATE fulfillment_tickets SET issue_key = $4, opened_at = now() "
            "WHERE request_id = $1 AND action = $2 AND generation = $3",
            request_id,
            action,
            generation,
            issue_key,
        )
