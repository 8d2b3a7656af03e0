"""Catalog events (stream `catalog`): items and bundles as published, and each refresh.

Every version of every item stays in the stream, named by its content hash, so a request can pin
the exact definition it was made against and any service can find that definition again. An item's
Terraform modules are named the same way: `modules` maps each module source its actions name to
the content hash of the snapshot the catalog stored of it (table `terraform_modules`), so the
module a request runs is the one published with its definition, whatever the catalog holds now.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pao.contracts.events.base import REGISTRY, Event, Payload


def item_hash(item: dict[str, Any]) -> str:
    """The content hash of an item definition: sha256 of its canonical JSON (sorted keys)."""
    canonical = json.dumps(
        item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class CatalogEvent(Event):
    category: ClassVar[str] = "catalog"


class CatalogItemPublished(CatalogEvent):
    """An item appeared in the catalog."""

    event_type: ClassVar[str] = "CatalogItemPublished"
    schema_version: ClassVar[int] = 3
    item_id: str
    version: str
    path: str
    item_hash: str
    item: dict[str, Any]
    #: module source (as the item names it) -> module hash (`sha256:<hex>` of its snapshot)
    modules: dict[str, str] = {}


class CatalogItemUpdated(CatalogEvent):
    """An item's definition changed."""

    event_type: ClassVar[str] = "CatalogItemUpdated"
    schema_version: ClassVar[int] = 3
    item_id: str
    previous_version: str
    version: str
    path: str
    item_hash: str
    item: dict[str, Any]
    #: module source (as the item names it) -> module hash (`sha256:<hex>` of its snapshot)
    modules: dict[str, str] = {}


class CatalogItemRemoved(CatalogEvent):
    """An item left the catalog; requests made against it keep their pinned version."""

    event_type: ClassVar[str] = "CatalogItemRemoved"
    item_id: str
    last_version: str


class CatalogBundlePublished(CatalogEvent):
    """A bundle appeared or changed."""

    event_type: ClassVar[str] = "CatalogBundlePublished"
    bundle_id: str
    version: str
    bundle: dict[str, Any]


class CatalogBundleRemoved(CatalogEvent):
    """A bundle left the catalog."""

    event_type: ClassVar[str] = "CatalogBundleRemoved"
    bundle_id: str


class CatalogItemModeSwitched(CatalogEvent):
    """An operator switched the mode new requests of an item run in (`previous_mode` was in
    effect until now); requests already made keep theirs. A switch back to the item's default
    mode ends the switch."""

    event_type: ClassVar[str] = "CatalogItemModeSwitched"
    item_id: str
    mode: Literal["automated", "manual"]
    previous_mode: Literal["automated", "manual"]
    reason: str
    by: str


class CatalogRefreshed(CatalogEvent):
    """A refresh found a valid catalog that differs from the one served; closes its changes."""

    event_type: ClassVar[str] = "CatalogRefreshed"
    catalog_version: str
    previous_version: str | None
    source: str
    revision: str | None
    added: list[str]
    updated: list[str]
    removed: list[str]


class CatalogRefreshFailed(CatalogEvent):
    """A refresh found problems; the last good catalog stays served."""

    event_type: ClassVar[str] = "CatalogRefreshFailed"
    source: str
    revision: str | None
    kept_version: str | None
    problems: list[dict[str, Any]]


CATALOG_EVENTS = REGISTRY.register(
    CatalogItemPublished,
    CatalogItemUpdated,
    CatalogItemRemoved,
    CatalogBundlePublished,
    CatalogBundleRemoved,
    CatalogItemModeSwitched,
    CatalogRefreshed,
    CatalogRefreshFailed,
)


def _with_item_hash(data: Payload) -> Payload:
    """Version 1 carried the item only; version 2 also names it by its content hash."""
    return {**data, "item_hash": item_hash(data["item"])}


def _without_modules(data: Payload) -> Payload:
    """Version 2 knew no module snapshots: its item's modules run from the catalog on disk."""
    return {**data, "modules": {}}


REGISTRY.upcaster("CatalogItemPublished", 1)(_with_item_hash)
REGISTRY.upcaster("CatalogItemUpdated", 1)(_with_item_hash)
REGISTRY.upcaster("CatalogItemPublished", 2)(_without_modules)
REGISTRY.upcaster("CatalogItemUpdated", 2)(_without_modules)
