"""`devctl resource`: what requests made; change a resource's inputs or decommission it."""

from __future__ import annotations

import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pao.devctl.context import call, globals_of
from pao.devctl.errors import CliError
from pao.devctl.export import ExportFormat, FileOption, FormatOption, PageSizeOption, export_all
from pao.devctl.inputs import load_inputs
from pao.devctl.output import OutputFormat, console, emit, err_console
from pao.devctl.plans import input_changes, render_input_changes
from pao.devctl.requests import MODE_HELP, Mode, _finish
from pao.devctl.terraform import confirm, follow, screen

app = typer.Typer(help="See and change what your requests made.", no_args_is_help=True)

WAIT_HELP = (
    "Follow the request until it ends, showing its Terraform plan; exit 0 only if it completes."
)
TIMEOUT_HELP = "With --wait: give up after this many seconds (exit 3)."


class ResourceState(StrEnum):
    provisioning = "provisioning"
    active = "active"
    updating = "updating"
    decommissioning = "decommissioning"
    decommissioned = "decommissioned"
    failed = "failed"


#: The filters of `resource list`, which `resource export` takes too.
ItemFilter = Annotated[str | None, typer.Option(help="Only resources of this catalog item.")]
TeamFilter = Annotated[str | None, typer.Option(help="Only resources this team owns.")]
OwnerFilter = Annotated[str | None, typer.Option(help="Only resources this user owns.")]
StateFilter = Annotated[
    ResourceState | None, typer.Option(help="Only resources in this state.", case_sensitive=False)
]
EnvironmentFilter = Annotated[
    str | None, typer.Option("--environment", "-e", help="Only this environment.")
]


def _time(value: str | None) -> str | None:
    return value[:19] if value else None


@app.command("list")
def list_resources(
    ctx: typer.Context,
    item: ItemFilter = None,
    team: TeamFilter = None,
    owner: OwnerFilter = None,
    state: StateFilter = None,
    environment: EnvironmentFilter = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Resources per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Resources to skip.")] = 0,
) -> None:
    """List the resources you may see. (GET /api/v1/resources)

    The filters combine; --limit and --offset page through the rest.

    Examples:

      devctl resource list --team team-data --state active

      devctl -o json resource list --item postgresql-standard -e prod
    """
    params = {
        "item_id": item,
        "team": team,
        "owner": owner,
        "state": state,
        "environment": environment,
        "limit": limit,
        "offset": offset,
    }
    page = call(ctx, "GET", "/resources", params=params)
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(page, g.output)
        return
    emit(
        page,
        g.output,
        title=f"{len(page['resources'])} of {page['total']} resource(s)",
        columns=["resource", "item", "env", "state", "owner", "team", "updated", "expires"],
        rows=[
            (
                r["resource_id"],
                r["item_id"],
                r["environment"],
                r["state"],
                r["owner"],
                r["owner_team"],
                _time(r.get("updated_at")),
                _time(r.get("expires_at")),
            )
            for r in page["resources"]
        ],
    )


@app.command("export")
def export_resources(
    ctx: typer.Context,
    item: ItemFilter = None,
    team: TeamFilter = None,
    owner: OwnerFilter = None,
    state: StateFilter = None,
    environment: EnvironmentFilter = None,
    fmt: FormatOption = ExportFormat.csv,
    file: FileOption = None,
    page_size: PageSizeOption = 500,
) -> None:
    """Every resource `resource list` would show with these filters, all pages, newest first.

    Example:

      devctl resource export --team team-data --state active --format json --file data.json
    """
    params = {
        "item_id": item,
        "team": team,
        "owner": owner,
        "state": state,
        "environment": environment,
    }
    export_all(
        ctx,
        "/resources",
        key="resources",
        id_field="resource_id",
        params=params,
        fmt=fmt,
        file=file,
        page_size=page_size,
    )


@app.command("get")
def get(
    ctx: typer.Context,
    resource_id: Annotated[str, typer.Argument(help="The resource id.")],
) -> None:
    """One resource: what it is, its inputs and outputs, and the requests that changed it.

    Secret outputs show as ***. (GET /api/v1/resources/{id})

    Example:

      devctl resource get 7d41c2a0-...
    """
    found = call(ctx, "GET", f"/resources/{resource_id}")
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(found, g.output)
        return
    emit(
        {
            k: found.get(k)
            for k in (
                "resource_id",
                "item_id",
                "item_version",
                "item_name",
                "state",
                "environment",
                "owner",
                "owner_team",
                "created_at",
                "updated_at",
                "expires_at",
                "last_request_id",
                "note",
                "inputs",
            )
        },
        g.output,
    )
    emit(
        None,
        g.output,
        title="outputs",
        columns=["action", "output", "value"],
        rows=[
            (action, name, value)
            for action, values in (found.get("outputs") or {}).items()
            for name, value in (values or {}).items()
        ],
    )
    emit(
        None,
        g.output,
        title="requests",
        columns=["request", "kind", "status", "requester", "created", "finished"],
        rows=[
            (
                r["request_id"],
                r["kind"],
                r["status"],
                r["requester"],
                _time(r.get("created_at")),
                _time(r.get("finished_at")),
            )
            for r in found.get("requests") or []
        ],
    )


def _submitted(
    ctx: typer.Context,
    answer: dict[str, Any],
    *,
    wait: bool,
    timeout: float | None,
) -> None:
    """After an update or decommission was accepted: say so, or follow it until it ends."""
    g = globals_of(ctx)
    what = f"{answer['kind']} of resource {answer['resource_id']}"
    if not wait:
        if g.output is not OutputFormat.table:
            emit(answer, g.output)
            return
        for line in (
            f"request {answer['request_id']} {answer['status']} ({what})",
            f"follow it: devctl request status {answer['request_id']} --watch",
        ):
            console.print(line, markup=False, highlight=False)
        return
    if g.output is OutputFormat.table:
        err_console.print(
            f"request {answer['request_id']} submitted ({what}); waiting ...",
            markup=False,
            highlight=False,
        )
    _finish(ctx, follow(ctx, answer["request_id"], timeout=timeout))


@app.command("update")
def update(
    ctx: typer.Context,
    resource_id: Annotated[str, typer.Argument(help="The resource id.")],
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", help="A new input value as name=value (repeatable)."),
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option(
            "--inputs", "-i", help="New input values (YAML or JSON).", exists=True, dir_okay=False
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before submitting.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
    timeout: Annotated[float | None, typer.Option(help=TIMEOUT_HELP)] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Repeat an update safely; default: a new key per call."
        ),
    ] = None,
    mode: Annotated[Mode | None, typer.Option(help=MODE_HELP, case_sensitive=False)] = None,
) -> None:
    """Change a resource's inputs. (POST /api/v1/resources/{id}/update)

    Starts from the resource's current inputs, applies --inputs FILE then each --set over them,
    prints each field that changes (old -> new) and asks before submitting the whole new input
    set (exit 2 without a terminal unless --yes).

    Examples:

      devctl resource update 7d41c2a0-... --set instance_size=large --wait

      devctl resource update 7d41c2a0-... -i new-inputs.yaml --yes
    """
    given = load_inputs(inputs_file, assignments)
    if not given:
        raise CliError(
            "PAO-CLI-004",
            "no new input value given",
            "Pass --set name=value or --inputs FILE",
            exit_code=2,
        )
    current = call(ctx, "GET", f"/resources/{resource_id}")
    old = dict(current.get("inputs") or {})
    inputs = {**old, **given}
    changes = input_changes(old, inputs)
    if not changes:
        raise CliError(
            "PAO-CLI-004",
            f"the values given are those resource {resource_id} already has; nothing was sent",
            f"`devctl resource get {resource_id}` shows its inputs",
        )
    out = screen(ctx)
    out.print(
        f"resource {resource_id} ({current['item_id']} {current['item_version']}, "
        f"{current['environment']}): {len(changes)} input(s) change",
        markup=False,
        highlight=False,
    )
    out.print(render_input_changes(changes), soft_wrap=True)
    confirm(ctx, f"Update resource {resource_id}?", yes=yes)
    answer = call(
        ctx,
        "POST",
        f"/resources/{resource_id}/update",
        body={"inputs": inputs} | ({"mode": mode.value} if mode else {}),
        extra_headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
    )
    _submitted(ctx, answer, wait=wait, timeout=timeout)


@app.command("decommission")
def decommission(
    ctx: typer.Context,
    resource_id: Annotated[str, typer.Argument(help="The resource id.")],
    reason: Annotated[str, typer.Option(help="Why it goes; recorded with the request.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before submitting.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
    timeout: Annotated[float | None, typer.Option(help=TIMEOUT_HELP)] = None,
    mode: Annotated[Mode | None, typer.Option(help=MODE_HELP, case_sensitive=False)] = None,
) -> None:
    """Remove a resource and what it is made of. (POST /api/v1/resources/{id}/decommission)

    Shows the resource and asks before submitting (exit 2 without a terminal unless --yes).

    Example:

      devctl resource decommission 7d41c2a0-... --reason "project ended" --wait
    """
    current = call(ctx, "GET", f"/resources/{resource_id}")
    screen(ctx).print(
        f"resource {resource_id}: {current['item_id']} {current['item_version']} in "
        f"{current['environment']}, {current['state']}, owned by {current['owner']} "
        f"({current['owner_team']})",
        markup=False,
        highlight=False,
    )
    confirm(ctx, f"Decommission resource {resource_id}? What it is made of is destroyed", yes=yes)
    body = {"reason": reason} | ({"mode": mode.value} if mode else {})
    answer = call(ctx, "POST", f"/resources/{resource_id}/decommission", body=body)
    _submitted(ctx, answer, wait=wait, timeout=timeout)
