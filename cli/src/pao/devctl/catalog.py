"""`devctl catalog`: browse the catalog, read an item, refresh, switch an item's mode."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pao.devctl import authoring, impact, jira_import
from pao.devctl.context import call, globals_of
from pao.devctl.output import OutputFormat, console, emit
from pao.devctl.requests import Mode

app = typer.Typer(help="Browse the service catalog.", no_args_is_help=True)
app.command("new")(authoring.new_item)
app.command("import-jira")(jira_import.import_jira)
app.command("impact")(impact.impact)


@app.command("list")
def list_items(
    ctx: typer.Context,
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    owner: Annotated[
        str | None, typer.Option(help="Only items of this team, e.g. team-data.")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="Only items with this tag.")] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-s", help="Text in id, name, description or tags.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Items per page.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Items to skip.")] = 0,
) -> None:
    """List catalog items. (GET /api/v1/catalog)"""
    params = {
        "category": category,
        "owner": owner,
        "tag": tag,
        "q": search,
        "limit": limit,
        "offset": offset,
    }
    page = call(ctx, "GET", "/catalog", params=params)
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(page, g.output)
        return
    shown = len(page["items"])
    emit(
        page,
        g.output,
        columns=["id", "name", "category", "owner", "version", "mode", "modes"],
        rows=[
            (
                i["id"],
                i["name"],
                i["category"],
                i["owner"],
                i["version"],
                _mode_cell(i),
                ", ".join(i.get("modes") or [i["mode"]]),
            )
            for i in page["items"]
        ],
        title=f"catalog {page['catalog_version']}: {shown} of {page['total']} item(s)",
    )


def _mode_cell(modes: dict[str, Any]) -> str:
    """The mode in effect, marked when an operator switched it from the default."""
    switch = modes.get("mode_switch")
    return f"{modes['mode']} (switched)" if switch else modes["mode"]


def _switch_line(switch: dict[str, Any] | None) -> str | None:
    if not switch:
        return None
    return f"{switch['mode']} by {switch['by']} at {switch['at'][:19]}: {switch['reason']}"


@app.command("get")
def get_item(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(help="The item id, e.g. postgresql-standard.")],
    schema: Annotated[bool, typer.Option("--schema", help="Print the form's JSON Schema.")] = False,
) -> None:
    """Show one item: what it is, its form fields and how it is fulfilled."""
    g = globals_of(ctx)
    if schema:
        emit(
            call(ctx, "GET", f"/catalog/items/{item_id}/schema"),
            g.output if g.output is not OutputFormat.table else OutputFormat.json,
        )
        return
    data = call(ctx, "GET", f"/catalog/items/{item_id}")
    if g.output is not OutputFormat.table:
        emit(data, g.output)
        return
    item: dict[str, Any] = data["item"]
    meta = item["metadata"]
    fulfillment = item["fulfillment"]
    modes = data.get("modes") or {
        "mode": fulfillment["mode"],
        "default_mode": fulfillment["mode"],
        "modes": fulfillment.get("modes") or [fulfillment["mode"]],
        "mode_switch": None,
    }
    emit(
        {
            "id": meta["id"],
            "name": meta["name"],
            "category": meta["category"],
            "owner": meta["owner"],
            "version": meta["version"],
            "lifecycle": meta.get("lifecycle", "active"),
            "description": meta["description"],
            "support": meta.get("support"),
            "mode": _mode_cell(modes),
            "default mode": modes["default_mode"],
            "modes": ", ".join(modes["modes"]),
            "mode switch": _switch_line(modes.get("mode_switch")),
        },
        g.output,
    )
    form = item["form"]["schema"]
    required = set(form.get("required") or [])
    emit(
        None,
        g.output,
        title="form",
        columns=["field", "type", "required", "default", "help"],
        rows=[
            (
                name,
                prop.get("type") or ("enum" if "enum" in prop else "ref"),
                name in required,
                prop.get("default"),
                prop.get("title") or prop.get("description"),
            )
            for name, prop in form["properties"].items()
        ],
    )
    emit(
        None,
        g.output,
        title="actions",
        columns=["#", "name", "type", "timeout (s)"],
        rows=[
            (i + 1, a["name"], a["type"], a.get("timeout_seconds"))
            for i, a in enumerate(item["fulfillment"]["actions"])
        ],
    )


@app.command("mode")
def switch_mode(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(help="The item id, e.g. postgresql-standard.")],
    mode: Annotated[
        Mode, typer.Argument(help="The mode new requests run in.", case_sensitive=False)
    ],
    reason: Annotated[
        str, typer.Option(help="Why (3 to 500 characters); recorded with the switch.")
    ],
) -> None:
    """Switch the fulfilment mode new requests of an item run in (admins and the owning team).
    (POST /api/v1/catalog/items/{item_id}/mode)

    Requests already made keep their mode, and a ticket already open stays open. Switching back
    to the item's default mode ends the switch.

    Examples:

      devctl catalog mode postgresql-standard manual --reason "Terraform backend under maintenance"

      devctl -o json catalog mode postgresql-standard automated --reason "maintenance over"
    """
    state = call(
        ctx,
        "POST",
        f"/catalog/items/{item_id}/mode",
        body={"mode": mode.value, "reason": reason},
    )
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(state, g.output)
        return
    if not state["changed"]:
        what = f"{item_id} already runs new requests in mode {state['mode']}; nothing changed"
    elif state["mode_switch"]:
        what = (
            f"{item_id}: new requests run in mode {state['mode']} "
            f"(its default: {state['default_mode']})"
        )
    else:
        what = f"{item_id}: back to its default mode {state['mode']}"
    console.print(what, markup=False, highlight=False)


@app.command("refresh")
def refresh(ctx: typer.Context) -> None:
    """Reload the catalog from its source (admin or platform role). (POST /catalog/refresh)"""
    result = call(ctx, "POST", "/catalog/refresh", body={})
    g = globals_of(ctx)
    if g.output is not OutputFormat.table:
        emit(result, g.output)
        return
    console.print(
        f"catalog {result['status']}: version {result['catalog_version']} "
        f"(was {result['previous_version']}) from {result['source']}",
        markup=False,
    )
    for label in ("added", "updated", "removed"):
        if result[label]:
            console.print(f"  {label}: {', '.join(result[label])}", markup=False)
