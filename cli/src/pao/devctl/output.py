"""Rendering results: tables for people, JSON or YAML for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


console = Console()
err_console = Console(stderr=True)


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
    table = Table(title=title, show_header=columns is not None, header_style="bold")
    if columns is None:
        table.add_column("field", style="bold")
        table.add_column("value")
        rows = [(k, _cell(v)) for k, v in (data or {}).items()] if rows is None else rows
    else:
        for column in columns:
            table.add_column(column)
    for row in rows or []:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
