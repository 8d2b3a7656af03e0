"""An operator's switch of the mode new requests of an item run in, appended to the catalog.

The switch is a catalog event, beside the item's definitions, so every instance's view folds it
in stream order and a refresh (which appends only definitions) leaves it standing. Requests
already made are not touched: each pinned its mode when it was submitted.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from pao.catalog.view import STREAM, CatalogView
from pao.contracts import errors
from pao.contracts import events as ev
from pao.contracts.catalog import ModeState
from pao.contracts.commands import SwitchItemMode
from pao.contracts.errors import ErrorDetail, PaoError
from pao.shared.eventstore import ConcurrencyConflict, EventStore
from pao.spec.lifecycle import check_mode

log = structlog.get_logger(__name__)

_ATTEMPTS = 5

#: Refuses (raises) when the caller may not switch an item owned by the given team.
AuthorizeOwner = Callable[[str], None]


async def switch_mode(
    cmd: SwitchItemMode,
    *,
    store: EventStore,
    view: CatalogView,
    authorize: AuthorizeOwner,
    correlation_id: str | None,
) -> ModeState:
    """Record the switch (nothing when the item already runs in that mode) and return the
    item's modes as they stand afterwards."""
    for _ in range(_ATTEMPTS):
        await view.catch_up(store)
        item = view.items.get(cmd.item_id)
        if item is None:
            raise PaoError(
                errors.ITEM_NOT_FOUND,
                f"no catalog item '{cmd.item_id}'",
                details=[ErrorDetail(field="item_id", message=cmd.item_id)],
            )
        authorize(item["metadata"]["owner"])
        check_mode(item, cmd.mode)
        current = view.mode_of(cmd.item_id)
        if cmd.mode == current:
            return view.mode_state(cmd.item_id, changed=False)
        event = ev.CatalogItemModeSwitched(
            item_id=cmd.item_id,
            mode=cmd.mode,
            previous_mode=current,  # type: ignore[arg-type]
            reason=cmd.reason,
            by=cmd.by,
        )
        try:
            appended = await store.append(
                STREAM,
                [event.new(correlation_id=correlation_id, actor=cmd.by)],
                view.stream_version,
            )
        except ConcurrencyConflict:
            continue  # the catalog changed meanwhile (a refresh, another switch): decide again
        for envelope in appended:
            view.apply(envelope)
        log.info(
            "item mode switched",
            item_id=cmd.item_id,
            mode=cmd.mode,
            previous_mode=current,
            by=cmd.by,
        )
        return view.mode_state(cmd.item_id, changed=True)
    raise PaoError(errors.CONCURRENCY_CONFLICT, "the catalog keeps changing; try again")
