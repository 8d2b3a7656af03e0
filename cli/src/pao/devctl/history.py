"""`devctl request history`: every event of a request, who caused it and what it changed."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from pao.devctl.context import globals_of
from pao.devctl.output import OutputFormat, emit
from pao.devctl.paging import every_page

AS_OF_HELP = "As it was at this time (ISO 8601, e.g. 2026-11-26T08:00:00Z; without a zone, UTC)."
_PAGE = 500


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def changes_line(changes: dict[str, dict[str, Any]]) -> str:
    """`field: before -> after` for each field an event changed, a line each."""
    return "\n".join(
        f"{name}: {_shown(change['before'])} -> {_shown(change['after'])}"
        for name, change in changes.items()
    )


def history(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_HELP)] = None,
) -> None:
    """Every event of a request, oldest first: when, who, what, and what it changed.
    (GET /api/v1/requests/{id}/history)

    Examples:

      devctl request history 0b9f2c1e-...

      devctl request history 0b9f2c1e-... --as-of 2026-11-26T08:00:00Z
    """
    last, entries = every_page(
        ctx,
        f"/requests/{request_id}/history",
        "entries",
        params={"as_of": as_of},
        page_size=_PAGE,
    )
    g = globals_of(ctx)
    answer = {"request_id": last["request_id"], "as_of": last["as_of"], "entries": entries}
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
        return
    emit(
        answer,
        g.output,
        title=f"request {last['request_id']}: {len(entries)} event(s)"
        + (f" up to {last['as_of']}" if last["as_of"] else ""),
        columns=["seq", "at", "actor", "event", "summary", "changes"],
        rows=[
            (
                e["seq"],
                e["at"][:19],
                e["actor"],
                e["event_type"],
                e["summary"],
                changes_line(e["changes"]),
            )
            for e in entries
        ],
    )
