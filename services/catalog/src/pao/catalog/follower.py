"""Keeps a catalog view current in every instance: a catalog event on Kafka triggers a catch-up.

Kafka only says "something changed"; the events themselves are read from the store, in stream
order, so a duplicate or a missed record cannot put the view out of step. A slow periodic
catch-up covers a broker outage.
"""

from __future__ import annotations

import asyncio

import structlog

from pao.catalog.view import CatalogView
from pao.contracts.topics import topic_for_category
from pao.shared.eventstore import EventStore
from pao.shared.kafka import make_consumer
from pao.shared.lifecycle import pause
from pao.shared.settings import Settings

log = structlog.get_logger(__name__)


async def follow_catalog(
    settings: Settings,
    store: EventStore,
    view: CatalogView,
    stop: asyncio.Event,
    *,
    safety_interval: float = 30.0,
) -> None:
    """Run until `stop`: catch the view up on each catalog event and every `safety_interval`."""
    consumer = make_consumer(settings, topic_for_category("catalog"), group_id=None)
    consumer_started = False
    loop = asyncio.get_running_loop()
    next_safety = loop.time() + safety_interval
    try:
        while not stop.is_set():
            if not consumer_started:
                try:
                    await consumer.start()
                    await consumer.seek_to_end()
                    consumer_started = True
                except Exception as exc:  # noqa: BLE001 - keep serving; retry the broker later
                    log.warning("catalog follower cannot reach the broker", error=str(exc))
                    await pause(stop, 5)
            changed = False
            if consumer_started:
                batch = await consumer.getmany(timeout_ms=200)
                changed = any(batch.values())
            else:
                await asyncio.sleep(0)
            if changed or loop.time() >= next_safety:
                next_safety = loop.time() + safety_interval
                try:
                    applied = await view.catch_up(store)
                except Exception as exc:  # noqa: BLE001 - the database may be briefly away
                    log.warning("catalog catch-up failed", error=str(exc))
                    continue
                if applied:
                    log.info("catalog view caught up", events=applied, version=view.version)
    finally:
        if consumer_started:
            await consumer.stop()
