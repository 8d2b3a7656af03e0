"""Item definitions by content hash, learnt from the catalog's events.

A request pins its item by hash and carries only what every consumer needs; fulfilment, the one
service that needs the whole definition (its templates), keeps every definition the catalog
publishes in its own table and the ones in use in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import asyncpg

from pao.contracts import events as ev
from pao.shared.consumer import Delivery, Handlers

CONSUMER = "pao-fulfillment-catalog"


class Definitions:
    """Definitions by hash: a bounded in-memory cache over `fulfillment_definitions`."""

    def __init__(self, pool: asyncpg.Pool, *, capacity: int = 1_000) -> None:
        self._pool = pool
        self._capacity = capacity
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def get(self, item_hash: str) -> dict[str, Any] | None:
        """The definition with this hash; None while the catalog's event has not arrived."""
        found = self._cache.get(item_hash)
        if found is None:
            found = await self._pool.fetchval(
                "SELECT definition FROM fulfillment_definitions WHERE item_hash = $1", item_hash
            )
            if found is None:
                return None
            self._cache[item_hash] = found
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        self._cache.move_to_end(item_hash)
        return found


async def on_item_published(
    delivery: Delivery[ev.CatalogItemPublished | ev.CatalogItemUpdated],
) -> None:
    """Keep the definition the catalog published (definitions never change under a hash)."""
    event = delivery.event
    await delivery.conn.execute(
        "INSERT INTO fulfillment_definitions (item_hash, item_id, item_version, definition) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        event.item_hash,
        event.item_id,
        event.version,
        event.item,
    )


HANDLERS: Handlers = {
    ev.CatalogItemPublished: on_item_published,
    ev.CatalogItemUpdated: on_item_published,
}
