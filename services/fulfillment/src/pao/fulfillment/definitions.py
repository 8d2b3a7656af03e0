"""Item definitions by content hash, learnt from the catalog's events.

A request pins its item by hash and carries only what every consumer needs; fulfilment, the one
service that needs the whole definition (its templates), keeps every definition the catalog
publishes in its own table and the ones in use in memory. With each definition it keeps the
Terraform module snapshots the catalog published it with (module source -> module hash), which is
what a Terraform action of a request pinned to that definition runs.
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

    async def modules(self, item_hash: str) -> dict[str, str]:
        """The module snapshots of the definition with this hash (module source -> module hash);
        empty when the catalog published it before it snapshotted modules, or not yet.

        Read from the table each time (a Terraform run is rare; the map is filled in once for a
        definition published before snapshots existed)."""
        found = await self._pool.fetchval(
            "SELECT modules FROM fulfillment_definitions WHERE item_hash = $1", item_hash
        )
        return dict(found or {})


async def on_item_published(
    delivery: Delivery[ev.CatalogItemPublished | ev.CatalogItemUpdated],
) -> None:
    """Keep the definition the catalog published and its module snapshots; neither changes
    under a hash (the catalog refuses new module content without a new item version). A
    definition first published before the catalog took snapshots gets its map once."""
    event = delivery.event
    await delivery.conn.execute(
        "INSERT INTO fulfillment_definitions "
        "(item_hash, item_id, item_version, definition, modules) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (item_hash) DO UPDATE SET modules = EXCLUDED.modules "
        "WHERE fulfillment_definitions.modules = '{}'::jsonb",
        event.item_hash,
        event.item_id,
        event.version,
        event.item,
        event.modules,
    )


HANDLERS: Handlers = {
    ev.CatalogItemPublished: on_item_published,
    ev.CatalogItemUpdated: on_item_published,
}
