"""Reading a paged list endpoint to its end."""

from __future__ import annotations

from typing import Any

import typer

from pao.devctl.context import globals_of


def every_page(
    ctx: typer.Context, path: str, key: str, *, params: dict[str, Any], page_size: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every row under `key` of every page of `path`, with one client; also the last page.

    Pages are asked for by offset until one comes back short: an endpoint that lists oldest
    first (the audit, a history) only grows at its end, so no row is skipped or repeated.
    """
    client = globals_of(ctx).client()
    rows: list[dict[str, Any]] = []
    try:
        while True:
            page = client.request(
                "GET", path, params={**params, "limit": page_size, "offset": len(rows)}
            )
            rows += page[key]
            if len(page[key]) < page_size:
                return page, rows
    finally:
        client.close()
