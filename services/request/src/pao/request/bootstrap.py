"""Wiring the request service: its process manager and its projector."""

from __future__ import annotations

import asyncpg

from pao.request import expiry, lifecycle, process
from pao.request.projection import Projector, rebuild
from pao.request.states import RequestStates
from pao.shared.runtime import Scope

#: The request service's migrations.
MIGRATIONS = "pao.request.migrations"


async def start_process_manager(scope: Scope) -> None:
    """Follow request events and fulfilment reports; decide each request's next step; keep
    resources in step with their requests; decommission expired ones."""
    states = RequestStates(scope.store)
    await scope.consume(process.CONSUMER, process.handlers(states))
    await scope.consume(lifecycle.CONSUMER, lifecycle.handlers(states))
    settings = scope.settings
    scope.spawn(
        "resource-expiry",
        expiry.run(
            scope.store,
            scope.stop,
            every=settings.resource_expiry_check_seconds,
            notice_seconds=settings.resource_expiry_notice_seconds,
            default_environment=settings.default_environment,
        ),
    )


async def start_projector(scope: Scope) -> Projector:
    """Keep the request read models up to date with the store."""
    projector = Projector(scope.pool)
    scope.spawn("projector", projector.run(scope.stop))
    return projector


async def rebuild_read_models(pool: asyncpg.Pool) -> int:
    """Empty the request read models and replay every event; returns how many were applied."""
    return await rebuild(pool)
