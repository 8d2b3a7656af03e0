"""`devctl audit`: every command PAO accepted or refused, for admins."""

from __future__ import annotations

import csv
import sys
from enum import StrEnum
from typing import Annotated

import typer

from pao.devctl.context import globals_of
from pao.devctl.output import OutputFormat, emit
from pao.devctl.paging import every_page

#: The columns of the CSV, in the order of the API's records.
COLUMNS = (
    "audit_id",
    "at",
    "user",
    "principal",
    "access_key_id",
    "method",
    "route",
    "target_id",
    "item_id",
    "status",
    "error_code",
    "remote_addr",
    "correlation_id",
)
_PAGE = 1000


class AuditFormat(StrEnum):
    csv = "csv"
    json = "json"


def audit(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="At or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Before (ISO 8601).")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's commands.")] = None,
    item: Annotated[
        str | None,
        typer.Option(help="Only commands on this catalog item (submits of it, changes to it)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only commands acting on this request or resource id.")
    ] = None,
    fmt: Annotated[
        AuditFormat | None,
        typer.Option(
            "--format",
            help="csv or json, every record (default: as --output).",
            case_sensitive=False,
        ),
    ] = None,
) -> None:
    """Every command accepted or refused, oldest first: who, what, the answer, when, from where.
    Needs the admin role; reads every page. (GET /api/v1/audit)

    Examples:

      devctl audit --since 2026-11-26T00:00:00Z --user dana

      devctl audit --item postgresql-rds --format csv > audit.csv

      devctl audit --target 0b9f2c1e-...
    """
    params = {"since": since, "until": until, "user": user, "item": item, "target": target}
    _, records = every_page(ctx, "/audit", "records", params=params, page_size=_PAGE)
    output = globals_of(ctx).output
    if fmt is AuditFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([r[c] for c in COLUMNS] for r in records)
        return
    if fmt is AuditFormat.json or output is not OutputFormat.table:
        shown = OutputFormat.json if fmt is AuditFormat.json else output
        emit({"total": len(records), "records": records}, shown)
        return
    emit(
        records,
        output,
        title=f"{len(records)} command(s)",
        columns=["at", "user", "command", "target", "status", "error", "from", "correlation id"],
        rows=[
            (
                r["at"],
                r["user"] or r["access_key_id"],
                f"{r['method']} {r['route']}",
                r["target_id"],
                r["status"],
                r["error_code"],
                r["remote_addr"],
                r["correlation_id"],
            )
            for r in records
        ],
    )
