"""`devctl catalog`: browse the catalog, read an item, refresh."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pao.devctl.context import call, globals_of
from pao.devctl.output import OutputFormat, console, emit

app = typer.Typer(help="Browse the service catalog.", no_args_is_help=True)


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
        columns=["id", "name", "category", "owner", "version", "mode"],
        rows=[
            (i["id"], i["name"], i["category"], i["owner"], i["version"], i["mode"])
            for i in page["items"]
        ],
        title=f"catalog {page['catalog_version']}: {shown} of {page['total']} item(s)",
    )


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
            "mode": item["fulfillment"]["mode"],
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
