"""An item's published versions, from the catalog's stream: what
`GET /catalog/items/{id}/versions` and `.../versions/{version}` answer, so that a change can be
compared with the version live requests and resources were made with (`devctl catalog impact
--to`).

The catalog stream keeps every definition it ever published (`CatalogItemPublished`,
`CatalogItemUpdated`); the served view holds only the current one. These reads are rare (a
platform engineer about to change an item), so the stream is read whole each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pao.catalog.view import STREAM
from pao.contracts.events import REGISTRY, CatalogItemPublished, CatalogItemUpdated
from pao.shared.eventstore import EventStore

_DEFINITIONS = frozenset({CatalogItemPublished.event_type, CatalogItemUpdated.event_type})


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """One definition of an item as the catalog published it."""

    version: str
    item_hash: str
    published_at: datetime
    item: dict[str, Any]


async def published_versions(store: EventStore, item_id: str) -> list[PublishedVersion]:
    """Every definition of the item the catalog published, oldest first; one published again
    unchanged (a refresh, a revert) is listed once, at its first publication."""
    found: dict[str, PublishedVersion] = {}
    for envelope in await store.read_stream(STREAM):
        if envelope.event_type not in _DEFINITIONS or envelope.data.get("item_id") != item_id:
            continue
        event = REGISTRY.decode(envelope)
        assert isinstance(event, CatalogItemPublished | CatalogItemUpdated)
        if event.item_hash not in found:
            found[event.item_hash] = PublishedVersion(
                event.version, event.item_hash, envelope.occurred_at, event.item
            )
    return list(found.values())


def at_version(versions: list[PublishedVersion], version: str) -> PublishedVersion | None:
    """The item as last published with `version` (an item edited without a version bump was
    published more than once with it)."""
    matching = [v for v in versions if v.version == version]
    return matching[-1] if matching else None
