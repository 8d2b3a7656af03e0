"""`devctl stats`: the platform's figures, for the people who run it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from pao.devctl.context import call, globals_of
from pao.devctl.output import OutputFormat, console, emit


def stats(
    ctx: typer.Context,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch", "-w", min=1.0, help="Refresh every SECONDS until interrupted (Ctrl-C)."
        ),
    ] = None,
) -> None:
    """The platform's figures: throughput, latencies, the fulfilment queue, breakers and lags.
    Needs the admin or platform role. (GET /api/v1/stats)

    Examples:

      devctl stats

      devctl stats --watch 5

      devctl -o json stats
    """
    g = globals_of(ctx)
    while True:
        answer = call(ctx, "GET", "/stats")
        if g.output is not OutputFormat.table:
            emit(answer, g.output)
        else:
            if watch:
                console.clear()
            show(answer)
        if not watch:
            return
        time.sleep(watch)


def show(answer: dict[str, Any]) -> None:
    """The figures as tables, one per area."""
    console.print(f"PAO at {answer['generated_at']}", style="bold", markup=False)
    _table(
        "Throughput",
        ["window", "submitted", "completed", "failed", "aborted", "submitted/min", "finished/min"],
        [
            (
                t["window"],
                t["submitted"],
                t["completed"],
                t["failed"],
                t["aborted"],
                t["submitted_per_minute"],
                t["finished_per_minute"],
            )
            for t in answer["throughput"]
        ],
    )
    latencies = answer["latencies"]
    _table(
        f"Submit to finish, seconds (last {latencies['window']})",
        ["item", "mode", "finished", "p50", "p95", "p99"],
        [
            (
                row.get("item_id") or "(all)",
                row.get("mode") or ("-" if row is latencies["overall"] else "default"),
                row["count"],
                row["p50"],
                row["p95"],
                row["p99"],
            )
            for row in [latencies["overall"], *latencies["by_item"]]
        ],
    )
    q = answer["queue"]
    _table(
        "Fulfilment queue",
        ["due now", "oldest due, s", "scheduled", "running", "expired leases"],
        [
            (
                q["due"],
                q["oldest_due_age_seconds"],
                q["scheduled"],
                q["running"],
                q["expired_leases"],
            )
        ],
    )
    breakers = answer["breakers"]
    _table(
        "Breakers: work parked behind an open breaker",
        ["system", "parked jobs", "last parked"],
        [(p["system"], p["parked_jobs"], p["last_parked_at"]) for p in breakers["parked"]],
        empty="no work is parked",
    )
    console.print(breakers["note"], style="dim", markup=False, highlight=False)
    lags = answer["lags"]
    _table(
        f"Lags (store head at position {lags['head_position']})",
        ["part", "name", "position / offsets", "behind", "unpublished for, s", "updated"],
        [
            (
                "relay",
                r["name"],
                r["checkpoint_position"],
                r["behind"],
                r["oldest_unpublished_age_seconds"],
                r["updated_at"],
            )
            for r in lags["relays"]
        ]
        + [
            ("projector", p["name"], p["checkpoint_position"], p["behind"], None, p["updated_at"])
            for p in lags["projectors"]
        ]
        + [
            (
                "consumer",
                f"{c['consumer']} on {c['topic']}",
                f"{c['committed']} of {c['published']} ({c['partitions']} partitions)",
                c["behind"],
                None,
                c["last_commit_at"],
            )
            for c in lags["consumers"]
        ],
    )


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]], empty: str = "") -> None:
    if not rows and empty:
        console.print(f"{title}: {empty}", markup=False, highlight=False)
        return
    emit(None, OutputFormat.table, columns=columns, rows=rows, title=title)
