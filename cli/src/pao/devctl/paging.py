"""Reading a paged list endpoint to its end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer

from pao.devctl.context import globals_of

if TYPE_CHECKING:
    from pao.devctl.client import PaoClient


def rows_of(
    client: PaoClient, path: str, key: str, *, params: dict[str, Any], page_size: int
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each page of `path` and its rows under `key`, asked for by offset until one comes back
    short: an endpoint that lists oldest first (the audit, a history) only grows at its end, so
    no row is skipped or repeated."""
    offset = 0
    while True:
        page = client.request("GET", path, params={**params, "limit": page_size, "offset": offset})
        yield page, page[key]
        offset += len(page[key])
        if len(page[key]) < page_size:
            return


def every_page(
    ctx: typer.Context, path: str, key: str, *, params: dict[str, Any], page_size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every row under `key` of every page of `path` (see `rows_of`), with one client; also the
    last page."""
    client = globals_of(ctx).client()
    rows: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    try:
        for page, found in rows_of(client, path, key, params=params, page_size=page_size):
            rows += found
            last = page
        return last, rows
    finally:
        client.close()
