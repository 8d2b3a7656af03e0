"""`devctl approvals`: what waits for your approval; approving or rejecting a request."""

from __future__ import annotations

from typing import Any, Literal

import typer

from pao.devctl.context import call, globals_of
from pao.devctl.output import OutputFormat, console, emit
from pao.devctl.plans import approval_summary, counts_short

app = typer.Typer(help="See what waits for your approval.", no_args_is_help=True)


def decide(
    ctx: typer.Context,
    request_id: str,
    decision: Literal["approve", "reject"],
    comment: str | None,
    plan_id: str | None = None,
) -> dict[str, Any]:
    """Record your decision on the approval the request waits for, and print where it stands;
    with `plan_id`, only if that plan is the one waiting (the one you saw)."""
    body: dict[str, Any] = {} if comment is None else {"comment": comment}
    if plan_id is not None:
        body["plan_id"] = plan_id
    answer = call(ctx, "POST", f"/requests/{request_id}/{decision}", body=body)
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
    else:
        console.print(
            f"request {answer['request_id']} {answer['status']}: "
            + approval_summary(answer.get("approval")),
            markup=False,
            highlight=False,
        )
    return answer


@app.command("list")
def list_approvals(ctx: typer.Context) -> None:
    """The requests that wait for your approval. (GET /api/v1/approvals)

    One row per request: the item, who asked, the environment, the action to approve (or the
    whole request), since when it waits, and the Terraform plan's counts (+add ~change
    -/+replace -destroy) when the approval is of a plan.

    Examples:

      devctl approvals list

      devctl terraform plan REQUEST_ID    then    devctl terraform apply REQUEST_ID
    """
    answer = call(ctx, "GET", "/approvals")
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
        return
    waiting = answer["approvals"]
    if not waiting:
        console.print("nothing waits for your approval", markup=False, highlight=False)
        return
    emit(
        answer,
        g.output,
        title=f"{len(waiting)} request(s) wait for your approval",
        columns=["request", "item", "kind", "requester", "env", "action", "waiting since", "plan"],
        rows=[
            (
                a["request_id"],
                a["item_id"],
                a.get("kind"),
                a["requester"],
                a["environment"],
                a.get("action") or "(whole request)",
                (a.get("requested_at") or "")[:19] or None,
                counts_short(a["plan"].get("counts")) if a.get("plan") else None,
            )
            for a in waiting
        ],
    )
