"""`devctl request`: submit a request, follow it, retry, abort or escalate it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pao.devctl import history
from pao.devctl.approvals import decide
from pao.devctl.context import call, globals_of
from pao.devctl.errors import CliError
from pao.devctl.explain import explain
from pao.devctl.export import ExportFormat, FileOption, FormatOption, PageSizeOption, export_all
from pao.devctl.inputs import load_inputs
from pao.devctl.output import OutputFormat, console, emit, err_console
from pao.devctl.plans import approval_summary

if TYPE_CHECKING:
    from pao.devctl.client import Tagged

app = typer.Typer(help="Request services and follow them.", no_args_is_help=True)
app.command("explain")(explain)


class Urgency(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


class Mode(StrEnum):
    automated = "automated"
    manual = "manual"


FROM_HELP = "Submit each row of this YAML or CSV file instead (see docs/devctl.md, Batches)."
IDS_HELP = "Act on each request listed in this YAML or CSV file instead."

MODE_HELP = (
    "Run the request in this fulfilment mode, one the item offers; default: the mode the "
    "catalog runs the item in now."
)


TERMINAL = ("completed", "failed", "aborted")
_POLL = 1.0


def _action_line(action: dict[str, Any]) -> str:
    outputs = action.get("outputs") or {}
    extra = f" {outputs['key']} {outputs.get('url', '')}".rstrip() if outputs.get("key") else ""
    error = f" ({action['error']})" if action.get("error") else ""
    return f"{action['name']}: {action['status']}{extra}{error}"


def _follow(
    ctx: typer.Context,
    request_id: str,
    *,
    timeout: float | None,
    on_change: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Print each change of the request's status until it ends; return the last status.
    `on_change` is called with each changed status after it is printed (not with -o json).

    Each poll revalidates the last answer (`If-None-Match`): while nothing changed, the gateway
    answers 304 without reading its database and the last status is used again."""
    seen: tuple[Any, ...] | None = None
    deadline = time.monotonic() + timeout if timeout else None
    quiet = globals_of(ctx).output is not OutputFormat.table
    client = globals_of(ctx).client()
    last: Tagged | None = None
    try:
        while True:
            last = client.revalidate(f"/requests/{request_id}/status", last)
            status = last.body
            shape = (
                status["status"],
                status["escalation_level"],
                tuple(_action_line(a) for a in status["actions"]),
            )
            if shape != seen and not quiet:
                progress = status["progress"]
                err_console.print(
                    f"{time.strftime('%H:%M:%S')} {status['status']} "
                    f"[{progress['done']}/{progress['total']}] " + "; ".join(shape[2]),
                    markup=False,
                    highlight=False,
                )
                seen = shape
                if on_change is not None:
                    on_change(status)
            if status["status"] in TERMINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    "PAO-CLI-005",
                    f"request {request_id} still {status['status']} after {timeout:.0f} s",
                    f"Follow it with `devctl request status {request_id} --watch`.",
                    exit_code=3,
                )
            time.sleep(_POLL)
    finally:
        client.close()


def _finish(ctx: typer.Context, status: dict[str, Any]) -> None:
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(status, g.output)
    else:
        console.print(
            f"request {status['request_id']} {status['status']}"
            + (f": {status['last_error']}" if status.get("last_error") else ""),
            markup=False,
            highlight=False,
        )
    if status["status"] != "completed":
        raise typer.Exit(1)


@app.command("submit")
def submit(
    ctx: typer.Context,
    item: Annotated[str | None, typer.Argument(help="The catalog item id.")] = None,
    assignments: Annotated[
        list[str] | None, typer.Option("--set", help="An input as name=value (repeatable).")
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option("--inputs", "-i", help="Inputs (YAML or JSON).", exists=True, dir_okay=False),
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="Ask for each field of the form first.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Follow the request until it ends; exit 0 only if it completes."
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after this many seconds (exit 3).")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Repeat a submit safely [default: a new key per call]."
        ),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(
            "--expires-at",
            help="Decommission what it makes at this time (ISO 8601 with a zone, e.g. "
            "2026-12-24T18:00:00Z), within the item's TTL policy.",
        ),
    ] = None,
    mode: Annotated[Mode | None, typer.Option(help=MODE_HELP, case_sensitive=False)] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help=FROM_HELP, exists=True, dir_okay=False)
    ] = None,
) -> None:
    """Request a catalog item, or each row of a file with --from. (POST /api/v1/requests)"""
    if from_file is not None:
        from pao.devctl import batch

        given = {"ITEM": item, "--set": assignments, "--inputs": inputs_file}
        given |= {"--interactive": interactive, "--wait": wait, "--mode": mode}
        given |= {"--idempotency-key": idempotency_key, "--expires-at": expires_at}
        batch.refuse_mixed(given)
        batch.submit_file(ctx, from_file)
        return
    if item is None:
        raise CliError(
            "PAO-CLI-004",
            "no catalog item given",
            "Pass the item id (`devctl catalog list` shows them), or --from FILE",
            exit_code=2,
        )
    inputs = load_inputs(inputs_file, assignments)
    if interactive:
        from pao.devctl.preview import fill_form

        inputs = fill_form(ctx, item, inputs)
    key = idempotency_key or str(uuid.uuid4())
    client = globals_of(ctx).client()
    try:
        answer = client.request(
            "POST",
            "/requests",
            body={"item_id": item, "inputs": inputs}
            | ({"expires_at": expires_at} if expires_at else {})
            | ({"mode": mode.value} if mode else {}),
            extra_headers={"Idempotency-Key": key},
        )
    finally:
        client.close()
    g = globals_of(ctx)
    if not wait:
        if g.output is not OutputFormat.table:
            emit(answer, g.output)
        else:
            console.print(
                f"request {answer['request_id']} {answer['status']} "
                f"({item} {answer['item_version']})",
                markup=False,
                highlight=False,
            )
            console.print(
                f"follow it: devctl request status {answer['request_id']} --watch",
                markup=False,
                highlight=False,
            )
        return
    if g.output is OutputFormat.table:
        err_console.print(
            f"request {answer['request_id']} submitted; waiting ...", markup=False, highlight=False
        )
    _finish(ctx, _follow(ctx, answer["request_id"], timeout=timeout))


#: The filters of `request list`, which `request export` takes too.
StatusFilter = Annotated[str | None, typer.Option(help="Only this status.")]
ItemFilter = Annotated[str | None, typer.Option(help="Only this catalog item.")]
RequesterFilter = Annotated[str | None, typer.Option(help="Only this requester.")]
TeamFilter = Annotated[str | None, typer.Option(help="Only items owned by this team.")]
SinceFilter = Annotated[str | None, typer.Option(help="Created at or after (ISO 8601).")]
UntilFilter = Annotated[str | None, typer.Option(help="Created before (ISO 8601).")]
SortOption = Annotated[
    str, typer.Option(help="created_at, -created_at, updated_at, -updated_at, status.")
]


def _filters(
    status: str | None,
    item: str | None,
    requester: str | None,
    team: str | None,
    since: str | None,
    until: str | None,
) -> dict[str, str | None]:
    """The list filters as the API's query parameters."""
    return {
        "status": status,
        "item_id": item,
        "requester": requester,
        "team": team,
        "created_after": since,
        "created_before": until,
    }


@app.command("list")
def list_requests(
    ctx: typer.Context,
    status: StatusFilter = None,
    item: ItemFilter = None,
    requester: RequesterFilter = None,
    team: TeamFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    sort: SortOption = "-created_at",
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List the requests you may see. (GET /api/v1/requests)"""
    params = {
        **_filters(status, item, requester, team, since, until),
        "sort": sort,
        "limit": limit,
        "offset": offset,
    }
    page = call(ctx, "GET", "/requests", params=params)
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(page, g.output)
        return
    emit(
        page,
        g.output,
        title=f"{len(page['requests'])} of {page['total']} request(s)",
        columns=["request", "item", "status", "requester", "created", "escalated"],
        rows=[
            (
                r["request_id"],
                r["item_id"],
                r["status"],
                r["requester"],
                r["created_at"][:19],
                r["escalation_level"] or "",
            )
            for r in page["requests"]
        ],
    )


@app.command("export")
def export_requests(
    ctx: typer.Context,
    status: StatusFilter = None,
    item: ItemFilter = None,
    requester: RequesterFilter = None,
    team: TeamFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    sort: SortOption = "created_at",
    fmt: FormatOption = ExportFormat.csv,
    file: FileOption = None,
    page_size: PageSizeOption = 500,
) -> None:
    """Every request `request list` would show with these filters, all pages.

    Example:

      devctl request export --status failed --since 2026-11-01 --file failed.csv
    """
    params = {**_filters(status, item, requester, team, since, until), "sort": sort}
    export_all(
        ctx,
        "/requests",
        key="requests",
        id_field="request_id",
        params=params,
        fmt=fmt,
        file=file,
        page_size=page_size,
    )


@app.command("get")
def get(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    as_of: Annotated[str | None, typer.Option("--as-of", help=history.AS_OF_HELP)] = None,
) -> None:
    """Everything about a request: inputs, actions and outputs, escalations.

    With --as-of, the request as it was at that time, rebuilt from its events.
    """
    found = call(ctx, "GET", f"/requests/{request_id}", params={"as_of": as_of})
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(found, g.output)
        return
    emit(
        {
            k: found.get(k)
            for k in (
                "request_id",
                "kind",
                "resource_id",
                "item_id",
                "item_version",
                "mode",
                "status",
                "requester",
                "environment",
                "created_at",
                "finished_at",
                "escalation_level",
                "last_error",
                "inputs",
            )
        },
        g.output,
    )
    emit(
        None,
        g.output,
        title="actions",
        columns=["action", "type", "status", "attempts", "outputs", "error"],
        rows=[
            (a["name"], a["type"], a["status"], a["attempts"], a["outputs"], a["error"])
            for a in found["actions"]
        ],
    )
    approval = found.get("approval")
    if approval:
        console.print(
            approval_summary(approval),
            markup=False,
            highlight=False,
        )


@app.command("status")
def status(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    watch: Annotated[bool, typer.Option("--watch", help="Follow until the request ends.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: give up after this many seconds (exit 3).")
    ] = None,
) -> None:
    """The request's status and each action's progress; exit 1 unless completed with --watch."""
    if watch:
        _finish(ctx, _follow(ctx, request_id, timeout=timeout))
        return
    current = call(ctx, "GET", f"/requests/{request_id}/status")
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(current, g.output)
        return
    progress = current["progress"]
    console.print(
        f"{current['request_id']}: {current['status']} "
        f"[{progress['done']}/{progress['total']}]"
        + (f", escalated (level {current['escalation_level']})" if current["escalated"] else ""),
        markup=False,
        highlight=False,
    )
    for action in current["actions"]:
        console.print("  " + _action_line(action), markup=False, highlight=False)


def _print_entry(entry: dict[str, Any], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        console.print(json.dumps(entry), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(
            f"{entry['at'][:19]} {entry['level']:<7} {entry['message']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command("logs")
def logs(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries until it ends.")
    ] = False,
) -> None:
    """The request's log, in order. (GET /requests/{id}/logs[?follow=true])"""
    g = globals_of(ctx)
    if not follow:
        answer = call(ctx, "GET", f"/requests/{request_id}/logs")
        if g.output is OutputFormat.yaml:
            emit(answer, g.output)
            return
        for entry in answer["entries"]:
            _print_entry(entry, g.output)
        return
    client = g.client()
    after = 0
    try:
        # The server closes a stream that has lasted its longest without `end`: follow again
        # from the last entry seen.
        while True:
            event = None
            params = {"follow": "true", "after": str(after)}
            for line in client.stream_lines(f"/requests/{request_id}/logs", params=params):
                if line.startswith("id: ") and line[4:].isdigit():
                    after = int(line[4:])
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "end":
                        if g.output is OutputFormat.json:
                            console.print(
                                json.dumps({"end": True, **data}), markup=False, highlight=False
                            )
                        else:
                            console.print(f"-- request {data['status']}", markup=False)
                        return
                    _print_entry(data, g.output)
    finally:
        client.close()


def _one_or_file(request_id: str | None, from_file: Path | None) -> str | None:
    """The request id given, or None with --from; exactly one of them."""
    if (request_id is None) == (from_file is None):
        raise CliError(
            "PAO-CLI-004",
            "no request id given" if request_id is None else "a request id and --from FILE given",
            "Pass the request id, or --from a file listing request ids",
            exit_code=2,
        )
    return request_id


@app.command("retry")
def retry(
    ctx: typer.Context,
    request_id: Annotated[str | None, typer.Argument()] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help=IDS_HELP, exists=True, dir_okay=False)
    ] = None,
) -> None:
    """Run a failed request's failed actions again (succeeded ones are kept)."""
    if _one_or_file(request_id, from_file) is None:
        from pao.devctl import batch

        batch.retry_file(ctx, from_file)
        return
    answer = call(ctx, "POST", f"/requests/{request_id}/retry", body={})
    _done(ctx, answer, f"retrying {', '.join(answer['retried'])}")


@app.command("abort")
def abort(
    ctx: typer.Context,
    request_id: Annotated[str | None, typer.Argument()] = None,
    reason: Annotated[str, typer.Option(help="Why; written on its tickets.")] = "aborted by the "
    "requester",
    from_file: Annotated[
        Path | None, typer.Option("--from", help=IDS_HELP, exists=True, dir_okay=False)
    ] = None,
) -> None:
    """Stop a request; no further action runs and its tickets are told."""
    if _one_or_file(request_id, from_file) is None:
        from pao.devctl import batch

        batch.abort_file(ctx, from_file, reason=reason)
        return
    answer = call(ctx, "POST", f"/requests/{request_id}/abort", body={"reason": reason})
    _done(ctx, answer, "aborted")


@app.command("escalate")
def escalate(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it needs attention.")],
    urgency: Annotated[
        Urgency, typer.Option(help="How urgent.", case_sensitive=False)
    ] = Urgency.high,
) -> None:
    """Escalate to the owning team: ticket priority raised, team told."""
    answer = call(
        ctx, "POST", f"/requests/{request_id}/escalate", body={"reason": reason, "urgency": urgency}
    )
    _done(ctx, answer, f"escalated to level {answer['level']} ({answer['urgency']})")


@app.command("escalation")
def escalation(ctx: typer.Context, request_id: Annotated[str, typer.Argument()]) -> None:
    """The request's escalation level and history."""
    answer = call(ctx, "GET", f"/requests/{request_id}/escalation")
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
        return
    console.print(f"level {answer['level']}", markup=False)
    emit(
        None,
        g.output,
        columns=["level", "urgency", "by", "at", "reason"],
        rows=[
            (e["level"], e["urgency"], e["by"], e["at"][:19], e["reason"])
            for e in answer["history"]
        ],
    )


def _done(ctx: typer.Context, answer: dict[str, Any], text: str) -> None:
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
    else:
        console.print(f"request {answer['request_id']}: {text}", markup=False, highlight=False)


@app.command("approve")
def approve(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    comment: Annotated[str | None, typer.Option(help="Why; recorded with your decision.")] = None,
) -> None:
    """Approve what the request waits for: the whole request, an action or a Terraform plan.

    Prints the request's status and where its approval stands (an approval that needs all its
    approvers stays pending until each has approved). (POST /requests/{id}/approve)

    Example:

      devctl request approve 0b9f2c1e-... --comment "capacity checked"
    """
    decide(ctx, request_id, "approve", comment)


@app.command("reject")
def reject(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument()],
    comment: Annotated[str, typer.Option(help="Why; required, recorded with your decision.")],
) -> None:
    """Reject what the request waits for; the request ends without it. (POST /requests/{id}/reject)

    The comment is required: it is recorded with your decision.

    Example:

      devctl request reject 0b9f2c1e-... --comment "use the shared cluster instead"
    """
    if not comment.strip():
        raise CliError(
            "PAO-CLI-004", "a rejection needs a comment", "Say why with --comment", exit_code=2
        )
    decide(ctx, request_id, "reject", comment)


app.command("history")(history.history)
