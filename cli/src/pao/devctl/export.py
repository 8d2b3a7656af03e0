"""Exports: every request or resource matching a list's filters, all pages, as CSV, JSON or YAML.

Pages are read with the list's own limit and offset until one comes back short (`every_page`). A
row that moves to a later page while the export runs (new rows push older ones back under
newest-first order) is read twice; it is kept once, where it was first seen. Request exports
read oldest first by default, so requests made meanwhile only add to the end.
"""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pao.devctl.errors import CliError
from pao.devctl.output import console, err_console
from pao.devctl.paging import every_page


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"
    yaml = "yaml"


FORMAT_HELP = "csv (nested values as JSON), json or yaml."
FILE_HELP = "Write here instead of to stdout (replaced only once every page was read)."
PAGE_HELP = "Rows asked for per call."

#: The options every export command takes, beside its list command's filters.
FormatOption = Annotated[
    ExportFormat, typer.Option("--format", "-f", help=FORMAT_HELP, case_sensitive=False)
]
FileOption = Annotated[Path | None, typer.Option("--file", help=FILE_HELP, dir_okay=False)]
PageSizeOption = Annotated[int, typer.Option(min=1, max=500, help=PAGE_HELP)]


def export_all(
    ctx: typer.Context,
    path: str,
    *,
    key: str,
    id_field: str,
    params: dict[str, Any],
    fmt: ExportFormat,
    file: Path | None,
    page_size: int,
) -> None:
    """Read every page of `path` (rows under `key`) and write the rows in `fmt`."""
    rows = read_all(ctx, path, key=key, id_field=id_field, params=params, page_size=page_size)
    text = render(rows, fmt)
    if file is None:
        # As written, not through rich: a CSV line must not be wrapped at the terminal's width.
        console.file.write(text)
        console.file.flush()
        return
    partial = file.with_name(f".{file.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(file)
    except OSError as exc:
        raise CliError(
            "PAO-CLI-004",
            f"cannot write {file}: {exc.strerror or exc}",
            "Give --file a path in a directory you may write to",
            exit_code=2,
        ) from exc
    err_console.print(
        f"exported {len(rows)} {key.rstrip('s')}(s) to {file}", markup=False, highlight=False
    )


def read_all(
    ctx: typer.Context,
    path: str,
    *,
    key: str,
    id_field: str,
    params: dict[str, Any],
    page_size: int,
) -> list[dict[str, Any]]:
    """Every row of a paged list, in the server's order, each once."""
    _, rows = every_page(ctx, path, key, params=params, page_size=page_size)
    once: dict[str, dict[str, Any]] = {}
    for row in rows:
        once.setdefault(str(row[id_field]), row)
    return list(once.values())


def render(rows: list[dict[str, Any]], fmt: ExportFormat) -> str:
    """The rows as a CSV table (one column per field seen, in order), a JSON or a YAML list."""
    if fmt is ExportFormat.json:
        return json.dumps(rows, indent=2, default=str) + "\n"
    if fmt is ExportFormat.yaml:
        return yaml.safe_dump(rows, sort_keys=False, default_flow_style=False)
    if not rows:
        return ""
    columns = list(dict.fromkeys(name for row in rows for name in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: _csv_cell(row.get(name)) for name in columns})
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
