"""Rendering results: tables for people, JSON or YAML for scripts.

A table never cuts what a person copies from it. Columns named like an identifier, a status or a
time (see `is_essential`) are printed whole on one line; the others wrap. When the terminal is too
narrow for every column, optional columns are dropped from the right first (and the caption says
which); when even the essential ones do not fit side by side, each row is printed as a block of
`column: value` lines instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import yaml
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


console = Console()
err_console = Console(stderr=True)

#: Column names whose values are copied or compared whole: identifiers, states, times.
ESSENTIAL = frozenset(
    {
        "id",
        "row",
        "request",
        "resource",
        "status",
        "state",
        "result",
        "time",
        "at",
        "created",
        "updated",
        "finished",
        "expires",
        "until",
        "since",
        "waiting since",
    }
)
#: How narrow an optional column may wrap before it is dropped instead.
OPTIONAL_MIN_WIDTH = 12
#: Cell padding of a column (one space each side) and one border or separator per column.
_PADDING = 2


def is_essential(column: str) -> bool:
    """Whether a column is kept whole and never dropped: by name, e.g. `request`, `*_id`, `*_at`."""
    name = column.strip().lower()
    return name in ESSENTIAL or name.endswith(("_id", " id", "_at"))


def emit(
    data: Any,
    fmt: OutputFormat,
    *,
    columns: Sequence[str] | None = None,
    rows: Sequence[Sequence[Any]] | None = None,
    title: str | None = None,
) -> None:
    """Print `data` as JSON/YAML, or `rows` (default: key/value pairs of data) as a table."""
    if fmt is OutputFormat.json:
        console.print_json(json.dumps(data, default=str))
        return
    if fmt is OutputFormat.yaml:
        console.print(
            yaml.safe_dump(data, sort_keys=False, default_flow_style=False),
            end="",
            markup=False,
            highlight=False,
        )
        return
    if columns is None:
        pairs = [(k, v) for k, v in (data or {}).items()] if rows is None else rows
        console.print(field_table(pairs, title=title))
        return
    # Not cropped: a value wider than a very narrow terminal is wrapped by the terminal, not cut.
    console.print(table_for(columns, rows or [], width=console.width, title=title), crop=False)


def field_table(pairs: Sequence[Sequence[Any]], *, title: str | None = None) -> Table:
    """One record as `field | value` lines; field names are never wrapped."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for row in pairs:
        table.add_row(*(Text(_cell(v)) for v in row))
    return table


def table_for(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    width: int,
    title: str | None = None,
) -> RenderableType:
    """The table of `rows` for a terminal `width` wide (see the module docstring)."""
    cells = [[_cell(v) for v in row] for row in rows]
    shown = list(range(len(columns)))
    # A table too wide first loses its outer border, then optional columns.
    edge = _needed(columns, cells, shown, edge=True) <= width
    while not edge and _needed(columns, cells, shown, edge=False) > width:
        optional = [i for i in shown if not is_essential(columns[i])]
        if not optional:
            return _records(columns, cells, title, width)
        shown.remove(optional[-1])
    table = Table(title=title, header_style="bold", show_edge=edge)
    for i in shown:
        if is_essential(columns[i]):
            table.add_column(columns[i], no_wrap=True, overflow="ignore")
        else:
            table.add_column(columns[i], overflow="fold")
    for row in cells:
        # Text, not str: a value is shown as it is, never read as rich markup.
        table.add_row(*(Text(row[i]) for i in shown))
    hidden = [columns[i] for i in range(len(columns)) if i not in shown]
    if hidden:
        table.caption = f"not shown at this width: {', '.join(hidden)} (widen or use -o json)"
    return table


def _needed(columns: Sequence[str], cells: list[list[str]], shown: list[int], *, edge: bool) -> int:
    """The narrowest the table can be: essential columns at their widest value, the others at
    OPTIONAL_MIN_WIDTH (or narrower if nothing in them is wider), plus padding and borders."""
    total = len(shown) - 1 + (2 if edge else 0)
    for i in shown:
        widest = max([cell_len(columns[i]), *(cell_len(row[i]) for row in cells)])
        essential = is_essential(columns[i])
        total += _PADDING + (widest if essential else min(widest, OPTIONAL_MIN_WIDTH))
    return total


def _records(
    columns: Sequence[str], cells: list[list[str]], title: str | None, width: int
) -> Group:
    """Each row as `column: value` lines, for terminals too narrow for the essential columns; an
    essential value too long for its line goes whole on a line of its own."""
    label = max(cell_len(c) for c in columns) + 2
    lines: list[Text] = [Text(title, style="bold")] if title else []
    for n, row in enumerate(cells):
        if n:
            lines.append(Text(""))
        for column, value in zip(columns, row, strict=True):
            name = (f"{column + ':':<{label}}", "bold")
            if not is_essential(column):
                lines.append(Text.assemble(name, value))
            elif label + cell_len(value) <= width:
                lines.append(Text.assemble(name, value, no_wrap=True, overflow="ignore"))
            else:
                lines.append(Text(f"{column}:", style="bold"))
                lines.append(Text(f"  {value}", no_wrap=True, overflow="ignore"))
    return Group(*lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
