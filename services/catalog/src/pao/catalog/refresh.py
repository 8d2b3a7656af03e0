"""Refreshing the catalog: read the source, validate everything, append what changed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog

from pao.catalog.sources import CatalogSource, Fetched, SourceError
from pao.catalog.view import STREAM, CatalogView
from pao.contracts import events as ev
from pao.contracts.catalog import ProblemOut, RefreshResult
from pao.contracts.envelope import NewEvent
from pao.shared.eventstore import ConcurrencyConflict, EventStore
from pao.spec.catalog import Snapshot, validate_catalog

log = structlog.get_logger(__name__)

_MAX_PROBLEMS_IN_EVENT = 200


async def refresh_catalog(
    *,
    source: CatalogSource,
    store: EventStore,
    view: CatalogView,
    actor: str | None = None,
    correlation_id: str | None = None,
) -> RefreshResult:
    """Load the source; a valid catalog replaces the served one, an invalid one is only reported.

    Either way nothing is half-applied: the changes of one refresh are one append.
    """
    try:
        fetched = await source.fetch()
    except SourceError as exc:
        problems = [ProblemOut(rule="source", message=str(exc), pointer="")]
        await _record_failure(store, view, source.describe(), None, problems, actor, correlation_id)
        raise
    report = await asyncio.to_thread(validate_catalog, fetched.files)
    for _ in range(5):
        await view.catch_up(store)
        if report.snapshot is None:
            problems = [ProblemOut(**p.as_dict()) for p in report.problems]
            await _record_failure(
                store, view, source.describe(), fetched.revision, problems, actor, correlation_id
            )
            return RefreshResult(
                status="failed",
                catalog_version=view.version,
                previous_version=view.version,
                source=source.describe(),
                revision=fetched.revision,
                problems=problems,
            )
        changes, result = _changes(view, report.snapshot, source.describe(), fetched)
        if not changes:
            return result
        stamped = [e.new(correlation_id=correlation_id, actor=actor) for e in changes]
        try:
            appended = await store.append(STREAM, stamped, view.stream_version)
        except ConcurrencyConflict:
            continue  # another instance refreshed at the same time: diff again
        for envelope in appended:
            view.apply(envelope)
        log.info(
            "catalog refreshed",
            version=result.catalog_version,
            added=result.added,
            updated=result.updated,
            removed=result.removed,
        )
        return result
    raise ConcurrencyConflict(STREAM, view.stream_version)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _changes(
    view: CatalogView, snapshot: Snapshot, source: str, fetched: Fetched
) -> tuple[list[ev.Event], RefreshResult]:
    changes: list[ev.Event] = []
    added, updated, removed = [], [], []
    for item_id, item in snapshot.items.items():
        version = item["metadata"]["version"]
        path = snapshot.paths[item_id]
        old = view.items.get(item_id)
        if old is None:
            added.append(item_id)
            changes.append(
                ev.CatalogItemPublished(
                    item_id=item_id,
                    version=version,
                    path=path,
                    item_hash=ev.item_hash(item),
                    item=item,
                )
            )
        elif not _same(old, item) or view.paths.get(item_id) != path:
            updated.append(item_id)
            changes.append(
                ev.CatalogItemUpdated(
                    item_id=item_id,
                    previous_version=old["metadata"]["version"],
                    version=version,
                    path=path,
                    item_hash=ev.item_hash(item),
                    item=item,
                )
            )
    for item_id, old in view.items.items():
        if item_id not in snapshot.items:
            removed.append(item_id)
            changes.append(
                ev.CatalogItemRemoved(item_id=item_id, last_version=old["metadata"]["version"])
            )
    for bundle_id, bundle in snapshot.bundles.items():
        old_bundle = view.bundles.get(bundle_id)
        if old_bundle is None or not _same(old_bundle, bundle):
            changes.append(
                ev.CatalogBundlePublished(
                    bundle_id=bundle_id, version=bundle["metadata"]["version"], bundle=bundle
                )
            )
    for bundle_id in view.bundles:
        if bundle_id not in snapshot.bundles:
            changes.append(ev.CatalogBundleRemoved(bundle_id=bundle_id))
    status = "updated" if changes or view.version != snapshot.version else "unchanged"
    if status == "updated":
        changes.append(
            ev.CatalogRefreshed(
                catalog_version=snapshot.version,
                previous_version=view.version,
                source=source,
                revision=fetched.revision,
                added=added,
                updated=updated,
                removed=removed,
            )
        )
    result = RefreshResult(
        status=status,
        catalog_version=snapshot.version,
        previous_version=view.version,
        source=source,
        revision=fetched.revision,
        added=added,
        updated=updated,
        removed=removed,
    )
    return changes, result


async def _record_failure(
    store: EventStore,
    view: CatalogView,
    source: str,
    revision: str | None,
    problems: list[ProblemOut],
    actor: str | None,
    correlation_id: str | None,
) -> None:
    event: NewEvent = ev.CatalogRefreshFailed(
        source=source,
        revision=revision,
        kept_version=view.version,
        problems=[p.model_dump() for p in problems[:_MAX_PROBLEMS_IN_EVENT]],
    ).new(correlation_id=correlation_id, actor=actor)
    for _ in range(5):
        await view.catch_up(store)
        try:
            for envelope in await store.append(STREAM, [event], view.stream_version):
                view.apply(envelope)
            break
        except ConcurrencyConflict:
            continue
    log.warning(
        "catalog refresh failed; serving the last good catalog",
        source=source,
        problems=len(problems),
        kept_version=view.version,
    )
