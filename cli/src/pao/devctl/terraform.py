"""`devctl terraform`: read a request's Terraform plans, and apply the one that waits."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from pao.devctl.approvals import decide
from pao.devctl.context import call, globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit, err_console
from pao.devctl.plans import pending_plans, render_plan
from pao.devctl.requests import _follow

app = typer.Typer(help="Read a request's Terraform plans and apply them.", no_args_is_help=True)


def screen(ctx: typer.Context) -> Console:
    """Where to show people what is about to happen: stdout for tables, else stderr (stdout
    keeps only the JSON or YAML document)."""
    return console if globals_of(ctx).output is OutputFormat.table else err_console


def confirm(ctx: typer.Context, question: str, *, yes: bool) -> None:
    """Go on only if the user says yes (or passed --yes); a `no` ends the command with exit 1."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            "PAO-CLI-004",
            f"`{ctx.command_path}` asks for confirmation and stdin is not a terminal",
            "Pass --yes to go on without asking",
            exit_code=2,
        )
    if not typer.confirm(question, default=False, err=True):
        err_console.print("nothing was sent", markup=False, highlight=False)
        raise typer.Exit(1)


def fetch_plans(
    ctx: typer.Context, request_id: str, *, missing_ok: bool = False
) -> dict[str, Any] | None:
    """The request's plans (GET /requests/{id}/plan); None if it has none and `missing_ok`."""
    try:
        return call(ctx, "GET", f"/requests/{request_id}/plan")
    except CliError as exc:
        if missing_ok and exc.status == 404:
            return None
        raise


def show_plans(plans: list[dict[str, Any]], to: Console) -> None:
    """Print each plan as a diff, a blank line between two."""
    for i, plan in enumerate(plans):
        if i:
            to.print()
        to.print(render_plan(plan), soft_wrap=True)


def follow(ctx: typer.Context, request_id: str, *, timeout: float | None) -> dict[str, Any]:
    """Follow the request as `devctl request submit --wait` does; return its last status.

    Also prints each Terraform plan the first time it appears, and how to approve when the
    request waits for approval. With -o json or yaml nothing is printed until the end.
    """
    shown: set[tuple[Any, Any]] = set()
    previous: list[str | None] = [None]

    def plans_and_hints(status: dict[str, Any]) -> None:
        document = fetch_plans(ctx, request_id, missing_ok=True) or {}
        new = [
            p for p in document.get("plans") or [] if (p["plan_id"], p["generation"]) not in shown
        ]
        show_plans(new, err_console)
        shown.update((p["plan_id"], p["generation"]) for p in new)
        if status["status"] == "awaiting_approval" and previous[0] != "awaiting_approval":
            _approval_hint(request_id, bool(pending_plans(document)))
        previous[0] = status["status"]

    return _follow(ctx, request_id, timeout=timeout, on_change=plans_and_hints)


def _approval_hint(request_id: str, has_plan: bool) -> None:
    if has_plan:
        hint = (
            f"waiting for approval: devctl terraform apply {request_id}, "
            f"or devctl request reject {request_id} --comment WHY"
        )
    else:
        hint = f"waiting for approval: devctl request approve {request_id}"
    err_console.print(hint, style="yellow", markup=False, highlight=False)


@app.command("plan")
def plan(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request id.")],
) -> None:
    """Show a request's Terraform plans as diffs. (GET /api/v1/requests/{id}/plan)

    Each plan: its action, plan id, state and counts, then one line per resource change:
    + create, ~ update, -/+ replace, - delete, <= read, each with the attributes that change
    (secrets stay ***). Exit 1 if the request has no Terraform plan.

    Examples:

      devctl terraform plan 0b9f2c1e-...

      devctl -o json terraform plan 0b9f2c1e-... > plan.json
    """
    document = fetch_plans(ctx, request_id)
    assert document is not None
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(document, g.output)
        return
    if not document.get("plans"):
        console.print(f"request {request_id} has no plan yet", markup=False, highlight=False)
        return
    show_plans(document["plans"], console)


@app.command("apply")
def apply(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    comment: Annotated[str | None, typer.Option(help="Why, recorded with your approval.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before approving.")] = False,
) -> None:
    """Approve the plan that waits, so PAO applies it. (POST /api/v1/requests/{id}/approve)

    Shows the plan in state awaiting_approval first and asks before approving (exit 2 without
    a terminal unless --yes; exit 1 if no plan waits).

    Examples:

      devctl terraform apply 0b9f2c1e-... --comment "reviewed with the DBA team"

      devctl terraform apply 0b9f2c1e-... --yes
    """
    document = fetch_plans(ctx, request_id)
    assert document is not None
    pending = pending_plans(document)
    if not pending:
        states = ", ".join(f"{p['action']} {p['state']}" for p in document.get("plans") or [])
        raise CliError(
            "PAO-CLI-004",
            f"request {request_id} has no plan awaiting approval"
            + (f" (its plans: {states})" if states else ""),
            f"`devctl terraform plan {request_id}` shows its plans; "
            f"`devctl request status {request_id}` where it stands",
        )
    show_plans(pending, screen(ctx))
    confirm(ctx, "Apply this plan?" if len(pending) == 1 else "Apply these plans?", yes=yes)
    # Only one plan waits at a time; approving names it, so a newer plan is not approved unseen.
    decide(ctx, request_id, "approve", comment, plan_id=pending[-1].get("plan_id"))
