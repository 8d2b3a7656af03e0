"""Batches: submit, abort or retry many requests listed in one YAML or CSV file.

The file is read and checked whole first (`batchfile`); nothing is sent if it is invalid. Rows
the gateway refuses are reported one by one; the others go on.

Submits are safe to run again: each row is sent with its idempotency key, so a row submitted
before is answered with the request it made ("already submitted") and nothing is made twice. A
row without a key gets one derived from the file's name and the row's item and inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pao.devctl.batchfile import (
    INVALID,
    Forms,
    IdRow,
    SubmitRow,
    field_schemas,
    id_rows,
    submit_rows,
)
from pao.devctl.client import PaoClient
from pao.devctl.context import globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, emit, err_console


@dataclass
class Outcome:
    """What became of one row: its result, and the gateway's refusal if it refused it."""

    row: int
    result: str
    request_id: str | None = None
    item_id: str | None = None
    idempotency_key: str | None = None
    code: str | None = None
    reason: str | None = None
    correlation_id: str | None = None
    details: list[dict[str, object]] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.code is not None


def _forms(client: PaoClient, item_ids: Iterable[str]) -> Forms:
    """Each item's field schemas from the catalog; an item the catalog lacks has none (the
    gateway refuses its rows, naming it)."""
    forms: Forms = {}
    for item_id in sorted(set(item_ids)):
        try:
            answer = client.request("GET", f"/catalog/items/{item_id}")
        except CliError as exc:
            if exc.status != 404:
                raise
            forms[item_id] = {}
            continue
        forms[item_id] = field_schemas(answer["item"]["form"]["schema"])
    return forms


def _refusal(outcome: Outcome, exc: CliError) -> Outcome:
    outcome.result = "refused"
    outcome.code = exc.code
    # The details the message does not already say: which field, and what is wrong with it.
    fields = [
        f"{d['field']} {d.get('message', '')}".strip()
        for d in exc.details
        if d.get("field") and str(d.get("message", "")) not in exc.message
    ]
    outcome.reason = "; ".join([exc.message.rstrip("."), *fields[:3]])
    outcome.correlation_id = exc.correlation_id
    outcome.details = list(exc.details)
    return outcome


@contextlib.contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr while rows are sent (only on a terminal: stdout stays clean)."""
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


def submit_file(ctx: typer.Context, path: Path) -> None:
    """`devctl request submit --from FILE`: submit each row; exit 1 if any was refused."""
    client = globals_of(ctx).client()
    try:
        rows = submit_rows(path, lambda item_ids: _forms(client, item_ids))
        outcomes: list[Outcome] = []
        with _progress(len(rows), f"submitting {path.name}") as advance:
            for row in rows:
                outcomes.append(_submit_one(client, row))
                advance()
    finally:
        client.close()
    # Optional columns are dropped from the right on a narrow terminal: the reason goes last.
    columns = ("row", "result", "request", "reason", "item", "idempotency key")
    _report(ctx, path, outcomes, columns)


def _submit_one(client: PaoClient, row: SubmitRow) -> Outcome:
    outcome = Outcome(
        row.row, "submitted", item_id=row.item_id, idempotency_key=row.idempotency_key
    )
    try:
        response = client.send(
            "POST",
            "/requests",
            body={"item_id": row.item_id, "inputs": row.inputs},
            extra_headers={"Idempotency-Key": row.idempotency_key},
        )
        # The answer itself, not only its body: a repeat says so in a header.
        answer = client.decode(response, ())
    except CliError as exc:
        return _refusal(outcome, exc)
    outcome.request_id = answer["request_id"]
    if response.headers.get("Idempotent-Replayed", "").lower() == "true":
        outcome.result = "already submitted"
    return outcome


def abort_file(ctx: typer.Context, path: Path, *, reason: str) -> None:
    """`devctl request abort --from FILE`: abort each request listed; a row's own reason wins
    over --reason."""

    def abort(client: PaoClient, row: IdRow, outcome: Outcome) -> None:
        body = {"reason": row.reason or reason}
        client.request("POST", f"/requests/{row.request_id}/abort", body=body)
        outcome.result = "aborted"

    _each_request(ctx, path, f"aborting {path.name}", abort)


def retry_file(ctx: typer.Context, path: Path) -> None:
    """`devctl request retry --from FILE`: retry each request listed (reasons are not used)."""

    def retry(client: PaoClient, row: IdRow, outcome: Outcome) -> None:
        answer = client.request("POST", f"/requests/{row.request_id}/retry", body={})
        outcome.result = "retrying"
        outcome.retried = list(answer["retried"])

    _each_request(ctx, path, f"retrying {path.name}", retry)


def _each_request(
    ctx: typer.Context, path: Path, what: str, act: Callable[[PaoClient, IdRow, Outcome], None]
) -> None:
    rows = id_rows(path)
    client = globals_of(ctx).client()
    outcomes: list[Outcome] = []
    try:
        with _progress(len(rows), what) as advance:
            for row in rows:
                outcome = Outcome(row.row, "", request_id=row.request_id)
                try:
                    act(client, row, outcome)
                except CliError as exc:
                    _refusal(outcome, exc)
                outcomes.append(outcome)
                advance()
    finally:
        client.close()
    _report(ctx, path, outcomes, ("row", "request", "result", "reason"))


_CELLS: dict[str, Callable[[Outcome], Any]] = {
    "row": lambda o: o.row,
    "item": lambda o: o.item_id,
    "result": lambda o: f"{o.result}: {', '.join(o.retried)}" if o.retried else o.result,
    "request": lambda o: o.request_id,
    "reason": lambda o: f"{o.code}: {o.reason}" if o.refused else "",
    "idempotency key": lambda o: o.idempotency_key,
}


def _report(
    ctx: typer.Context, path: Path, outcomes: list[Outcome], columns: tuple[str, ...]
) -> None:
    """Print one line per row (a table, or JSON/YAML rows); exit 1 if any row was refused."""
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit([_plain(o) for o in outcomes], g.output)
    else:
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.result] = counts.get(o.result, 0) + 1
        emit(
            None,
            g.output,
            title=f"{path.name}: " + ", ".join(f"{n} {word}" for word, n in counts.items()),
            columns=list(columns),
            rows=[[_CELLS[c](o) for c in columns] for o in outcomes],
        )
    if any(o.refused for o in outcomes):
        raise typer.Exit(1)


def _plain(outcome: Outcome) -> dict[str, Any]:
    data = asdict(outcome)
    return {k: v for k, v in data.items() if v is not None and v != []}


def refuse_mixed(given: dict[str, Any]) -> None:
    """--from takes everything from the file: refuse options that would say otherwise."""
    clash = [name for name, value in given.items() if value]
    if clash:
        raise CliError(
            INVALID,
            f"--from cannot be combined with {', '.join(clash)}",
            "Put everything in the file, or submit one request without --from",
            exit_code=2,
        )
