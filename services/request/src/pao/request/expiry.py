"""Resources with an expiry: their owner is told a while before, and at the time PAO starts
their decommission itself (a request like any other, by `pao`, with status, logs and retry).

One instance does this at a time (a leader lock); the decommission is started through the same
handler as a person's, so it is refused if the resource is being changed meanwhile, and a
resource already decommissioned is never picked again.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from pao.contracts import errors
from pao.contracts import events as ev
from pao.contracts.commands import SubmitRequest
from pao.contracts.errors import PaoError
from pao.request import handlers, queries
from pao.request.resource import fold, stream_of
from pao.shared.eventstore import ConcurrencyConflict, EventStore, read_stream
from pao.shared.lifecycle import pause, run_as_leader

log = structlog.get_logger(__name__)

LEADER_LOCK = "pao-resource-expiry"
#: Who starts an expired resource's decommission.
EXPIRY = ev.Requester(id="pao", name="PAO (resource expiry)")


async def pinned_definition(conn: asyncpg.Pool, item_hash: str) -> dict | None:
    """The item definition a resource was made with, from the catalog's stream."""
    data = await conn.fetchval(
        "SELECT data FROM events WHERE stream_id = 'catalog' "
        "AND event_type IN ('CatalogItemPublished', 'CatalogItemUpdated') "
        "AND data->>'item_hash' = $1 ORDER BY global_position DESC LIMIT 1",
        item_hash,
    )
    return None if data is None else data["item"]


async def switched_mode(conn: asyncpg.Pool, item_id: str) -> str | None:
    """The mode an operator last switched the item to, from the catalog's stream (None: never);
    new requests run in it while the item offers it."""
    data = await conn.fetchval(
        "SELECT data FROM events WHERE stream_id = 'catalog' "
        "AND event_type = 'CatalogItemModeSwitched' AND data->>'item_id' = $1 "
        "ORDER BY global_position DESC LIMIT 1",
        item_id,
    )
    return None if data is None else data["mode"]


async def notice(store: EventStore, resource_id: str) -> bool:
    """Tell the owner the resource expires soon (once per expiry time)."""
    state = fold(resource_id, await read_stream(store.pool, stream_of(resource_id)))
    at = state.expires_at
    if state.state != "active" or at is None or state.expiry_noticed == at:
        return False
    event = ev.ResourceExpiring(
        resource_id=resource_id,
        request_id=state.last_request_id,
        expires_at=at,
        owner=state.owner,
        owner_team=state.owner_team,
    )
    try:
        await store.append(stream_of(resource_id), [event.new(actor="pao")], state.version)
    except ConcurrencyConflict:
        return False  # it changed meanwhile; the next round looks again
    return True


async def decommission(store: EventStore, resource_id: str, *, default_environment: str) -> str:
    """Start the decommission of an expired resource; the new request's id."""
    state = fold(resource_id, await read_stream(store.pool, stream_of(resource_id)))
    item = await pinned_definition(store.pool, state.item_hash)
    if item is None:
        raise LookupError(f"the catalog stream has no definition {state.item_hash}")
    submitted = await handlers.change_resource(
        SubmitRequest(
            item_id=state.item_id,
            inputs=state.inputs,
            requester=EXPIRY,
            idempotency_key=f"expiry:{resource_id}:{state.expires_at}",
        ),
        resource_id=resource_id,
        kind="decommission",
        store=store,
        item=item,
        item_hash=state.item_hash,
        default_environment=default_environment,
        correlation_id=None,
        authorize=lambda _: None,  # PAO acts on its own resources' expiry
        reason=f"expired at {state.expires_at}",
        catalog_mode=await switched_mode(store.pool, state.item_id),
    )
    return submitted.request_id


async def sweep(store: EventStore, *, notice_seconds: float, default_environment: str) -> int:
    """One round: notices for resources about to expire, decommissions for expired ones."""
    near, due = await queries.expiring_resources(store.pool, notice_seconds=notice_seconds)
    for row in near:
        if await notice(store, row["resource_id"]):
            log.info("resource expires soon; owner told", resource_id=row["resource_id"])
    started = 0
    for row in due:
        try:
            request_id = await decommission(
                store, row["resource_id"], default_environment=default_environment
            )
        except (PaoError, LookupError) as exc:
            code = exc.code.code if isinstance(exc, PaoError) else None
            if code != errors.RESOURCE_STATE_CONFLICT.code:
                log.warning(
                    "expired resource not decommissioned",
                    resource_id=row["resource_id"],
                    error=str(exc),
                )
            continue
        started += 1
        log.info(
            "expired resource decommissioned", resource_id=row["resource_id"], request=request_id
        )
    return started


async def run(
    store: EventStore,
    stop: asyncio.Event,
    *,
    every: float,
    notice_seconds: float,
    default_environment: str,
) -> None:
    """Sweep every `every` seconds while this instance leads."""

    async def lead(ended: asyncio.Event) -> None:
        while not stop.is_set() and not ended.is_set():
            try:
                await sweep(
                    store, notice_seconds=notice_seconds, default_environment=default_environment
                )
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("resource expiry sweep failed", error=str(exc))
            await pause(stop, every)

    await run_as_leader(store.pool, LEADER_LOCK, stop, lead)
