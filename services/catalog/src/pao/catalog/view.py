"""The catalog as served: an in-memory read model folded from the `catalog` stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pao.contracts import events as ev
from pao.contracts.catalog import CatalogItemSummary, ModeState, ModeSwitch, summary_of
from pao.contracts.envelope import EventEnvelope
from pao.shared.eventstore import EventStore
from pao.spec.lifecycle import default_mode, effective_mode, modes_of

STREAM = "catalog"


@dataclass
class LastRefresh:
    """How the most recent refresh ended."""

    status: str
    at: datetime
    source: str
    revision: str | None
    problems: int = 0


@dataclass
class CatalogView:
    """Items and bundles by id, the catalog version, and how far the stream has been read."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: each served item's content hash, which a request pins
    hashes: dict[str, str] = field(default_factory=dict)
    #: each served item's module snapshots (module source -> module hash)
    modules: dict[str, dict[str, str]] = field(default_factory=dict)
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    #: operators' switches of an item's fulfilment mode still in effect, by item id
    mode_switches: dict[str, ModeSwitch] = field(default_factory=dict)
    version: str | None = None
    stream_version: int = 0
    last_refresh: LastRefresh | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _answers: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    def memo(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """A value derived from this version of the catalog, built once per version."""
        if key not in self._answers:
            if len(self._answers) > 1_000:
                self._answers.clear()
            self._answers[key] = build()
        return self._answers[key]

    def apply(self, envelope: EventEnvelope) -> None:
        """Fold one catalog event (in stream order)."""
        if envelope.stream_version <= self.stream_version:
            return
        event = ev.decode(envelope)
        match event:
            case ev.CatalogItemPublished() | ev.CatalogItemUpdated():
                self.items[event.item_id] = event.item
                self.hashes[event.item_id] = event.item_hash
                self.modules[event.item_id] = dict(event.modules)
                self.paths[event.item_id] = event.path
                # A new definition keeps an operator's switch unless it no longer means one.
                self._keep_switch_if_offered(event.item_id)
            case ev.CatalogItemRemoved():
                self.items.pop(event.item_id, None)
                self.hashes.pop(event.item_id, None)
                self.modules.pop(event.item_id, None)
                self.paths.pop(event.item_id, None)
                self.mode_switches.pop(event.item_id, None)
            case ev.CatalogItemModeSwitched():
                self.mode_switches[event.item_id] = ModeSwitch(
                    mode=event.mode,
                    by=event.by,
                    at=envelope.occurred_at.isoformat(),
                    reason=event.reason,
                )
                self._keep_switch_if_offered(event.item_id)
            case ev.CatalogBundlePublished():
                self.bundles[event.bundle_id] = event.bundle
            case ev.CatalogBundleRemoved():
                self.bundles.pop(event.bundle_id, None)
            case ev.CatalogRefreshed():
                self.version = event.catalog_version
                self.last_refresh = LastRefresh(
                    "updated", envelope.occurred_at, event.source, event.revision
                )
            case ev.CatalogRefreshFailed():
                self.last_refresh = LastRefresh(
                    "failed",
                    envelope.occurred_at,
                    event.source,
                    event.revision,
                    len(event.problems),
                )
        self.stream_version = envelope.stream_version
        self._answers.clear()

    def _keep_switch_if_offered(self, item_id: str) -> None:
        """Forget a switch to the item's default mode (a switch back) or to a mode it no longer
        offers: new requests run in the default then."""
        switch, item = self.mode_switches.get(item_id), self.items.get(item_id)
        if switch is None:
            return
        if item is None or switch.mode == default_mode(item) or switch.mode not in modes_of(item):
            del self.mode_switches[item_id]

    def mode_of(self, item_id: str) -> str:
        """The mode new requests of a served item run in."""
        switch = self.mode_switches.get(item_id)
        return effective_mode(self.items[item_id], switch.mode if switch else None)

    def mode_state(self, item_id: str, *, changed: bool | None = None) -> ModeState:
        """A served item's modes: the one in effect, its default, those it offers, the switch."""
        item = self.items[item_id]
        return ModeState(
            item_id=item_id,
            mode=self.mode_of(item_id),
            default_mode=default_mode(item),
            modes=modes_of(item),
            mode_switch=self.mode_switches.get(item_id),
            changed=changed,
        )

    async def catch_up(self, store: EventStore) -> int:
        """Apply the stream's events this view has not seen; return how many."""
        async with self._lock:
            new = await store.read_stream(STREAM, from_version=self.stream_version + 1)
            for envelope in new:
                self.apply(envelope)
            return len(new)

    def search(
        self,
        *,
        category: str | None = None,
        owner: str | None = None,
        tag: str | None = None,
        text: str | None = None,
    ) -> list[CatalogItemSummary]:
        """Summaries matching every given filter, by id."""
        needle = text.lower() if text else None
        found = []
        for item_id in sorted(self.items):
            item = self.items[item_id]
            metadata = item["metadata"]
            if category and metadata["category"] != category:
                continue
            if owner and metadata["owner"] != owner:
                continue
            if tag and tag not in (metadata.get("tags") or []):
                continue
            if needle and not any(
                needle in str(v).lower()
                for v in (
                    item_id,
                    metadata["name"],
                    metadata["description"],
                    *(metadata.get("tags") or []),
                )
            ):
                continue
            found.append(
                summary_of(item, modes=modes_of(item), switch=self.mode_switches.get(item_id))
            )
        return found
