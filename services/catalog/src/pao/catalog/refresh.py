"""Refreshing the catalog: read the source, validate everything, append what changed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog

from pao.catalog.modules import ModuleSnapshots, store_archives
from pao.catalog.sources import CatalogSource, Fetched, SourceError
from pao.catalog.view import STREAM, CatalogView
from pao.contracts import events as ev
from pao.contracts.catalog import ProblemOut, RefreshResult
from pao.contracts.envelope import NewEvent
from pao.shared.eventstore import ConcurrencyConflict, EventStore
from pao.spec.catalog import Snapshot, validate_catalog
from pao.spec.problems import Problem

log = structlog.get_logger(__name__)

_MAX_PROBLEMS_IN_EVENT = 200


async def refresh_catalog(
    *,
    source: CatalogSource,
    store: EventStore,
    view: CatalogView,
    actor: str | None = None,
    correlation_id: str | None = None,
    modules: ModuleSnapshots | None = None,
) -> RefreshResult:
    """Load the source; a valid catalog replaces the served one, an invalid one is only reported.

    Every Terraform module the items name is snapshotted (`modules`, by default the source's
    own snapshotter); a module that cannot be is a problem like any other. Either way nothing is
    half-applied: the changes of one refresh, and the module snapshots they name, are one
    transaction.
    """
    try:
        fetched = await source.fetch()
    except SourceError as exc:
        problems = [ProblemOut(rule="source", message=str(exc), pointer="")]
        await _record_failure(store, view, source.describe(), None, problems, actor, correlation_id)
        raise
    report = await asyncio.to_thread(validate_catalog, fetched.files)
    if report.snapshot is None:
        problems = [ProblemOut(**p.as_dict()) for p in report.problems]
        return await _failed(store, view, source, fetched, problems, actor, correlation_id)
    snapshots = modules if modules is not None else source.modules
    taken = await snapshots.of_items(report.snapshot.items, fetched.folder)
    await view.catch_up(store)
    moved = list(taken.problems) + _modules_moved(view, report.snapshot.items, taken.modules)
    if moved:
        by_file = {r.file: r for r in report.reports}
        problems = []
        for item_id, problem in moved:
            located = by_file[report.snapshot.paths[item_id]].place(problem)
            problems.append(ProblemOut(**located.as_dict()))
        return await _failed(store, view, source, fetched, problems, actor, correlation_id)
    for _ in range(5):
        await view.catch_up(store)
        changes, result = _changes(view, report.snapshot, taken.modules, source.describe(), fetched)
        if not changes:
            return result
        stamped = [e.new(correlation_id=correlation_id, actor=actor) for e in changes]
        named = {
            module_hash
            for e in changes
            if isinstance(e, ev.CatalogItemPublished | ev.CatalogItemUpdated)
            for module_hash in e.modules.values()
        }
        try:
            async with store.pool.acquire() as conn, conn.transaction():
                # the append first: its transaction id orders the events (see EventStore.append)
                appended = await store.append(STREAM, stamped, view.stream_version, conn=conn)
                stored = await store_archives(conn, (taken.archives[h] for h in sorted(named)))
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
            modules_stored=stored,
        )
        return result
    raise ConcurrencyConflict(STREAM, view.stream_version)


async def _failed(
    store: EventStore,
    view: CatalogView,
    source: CatalogSource,
    fetched: Fetched,
    problems: list[ProblemOut],
    actor: str | None,
    correlation_id: str | None,
) -> RefreshResult:
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


def _modules_moved(
    view: CatalogView, items: dict[str, dict[str, Any]], modules: dict[str, dict[str, str]]
) -> list[tuple[str, Problem]]:
    """Items whose module content changed while their definition (and version) did not: a
    request pins an item by its definition, so new module content needs a new version, or a
    request made before would run code it was not made against."""
    moved = []
    for item_id, item in items.items():
        old, before = view.items.get(item_id), view.modules.get(item_id) or {}
        now = modules.get(item_id) or {}
        if old is None or not before or before == now or not _same(old, item):
            continue
        changed = sorted(source for source in now if before.get(source) != now[source])
        moved.append(
            (
                item_id,
                Problem(
                    "module-version",
                    f"the content of {', '.join(changed) or 'its modules'} changed but the item "
                    f"is still version {item['metadata']['version']}: give it a new version, so "
                    "requests made against the old content keep it",
                    "/metadata/version",
                ),
            )
        )
    return moved


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _changes(
    view: CatalogView,
    snapshot: Snapshot,
    modules: dict[str, dict[str, str]],
    source: str,
    fetched: Fetched,
) -> tuple[list[ev.Event], RefreshResult]:
    changes: list[ev.Event] = []
    added, updated, removed = [], [], []
    for item_id, item in snapshot.items.items():
        version = item["metadata"]["version"]
        path = snapshot.paths[item_id]
        old = view.items.get(item_id)
        item_modules = modules.get(item_id, {})
        old_modules = view.modules.get(item_id, {})
        if old is None:
            added.append(item_id)
            changes.append(
                ev.CatalogItemPublished(
                    item_id=item_id,
                    version=version,
                    path=path,
                    item_hash=ev.item_hash(item),
                    item=item,
                    modules=item_modules,
                )
            )
        elif not _same(old, item) or view.paths.get(item_id) != path or old_modules != item_modules:
            # (new module content under the same definition was refused before: see
            # _modules_moved; here a map is only filled in for a definition that had none)
            updated.append(item_id)
            changes.append(
                ev.CatalogItemUpdated(
                    item_id=item_id,
                    previous_version=old["metadata"]["version"],
                    version=version,
                    path=path,
                    item_hash=ev.item_hash(item),
                    item=item,
                    modules=item_modules,
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
