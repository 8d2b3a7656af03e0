"""`devctl test template`: render an item file's actions against sample inputs, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pao.devctl.context import call, globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit

app = typer.Typer(help="Try templates and variables before publishing.", no_args_is_help=True)


@app.command("template")
def template(
    ctx: typer.Context,
    item_file: Annotated[Path, typer.Argument(help="The item file.", exists=True, dir_okay=False)],
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            "-i",
            help="Inputs (YAML or JSON); default: the form's first example.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    example: Annotated[int, typer.Option(help="Which form example to use (0-based).", min=0)] = 0,
) -> None:
    """Render every action of an item as PAO would, secrets masked, outputs as placeholders."""
    from pao.spec.rendering import RenderError, preview_context, render_actions
    from pao.spec.validation import validate_text

    g = globals_of(ctx)
    report = validate_text(item_file.read_text(encoding="utf-8"), str(item_file))
    if not report.valid or report.data is None or report.kind != "CatalogItem":
        first = report.problems[0].format() if report.problems else "not a catalog item"
        raise CliError(
            "PAO-VAL-001",
            f"{item_file} is not a valid item: {first}",
            "Run `devctl validate catalog-item` on it for every problem.",
        )
    item = report.data
    if inputs is not None:
        values = yaml.safe_load(inputs.read_text(encoding="utf-8")) or {}
    else:
        examples = item["form"]["schema"].get("examples") or []
        if example >= len(examples):
            raise CliError(
                "PAO-VAL-002",
                f"the form has {len(examples)} example(s)",
                "Pass --example with a smaller number, or --inputs FILE.",
            )
        values = examples[example]
    try:
        rendered = render_actions(item, preview_context(item, values))
    except RenderError as exc:
        raise CliError(
            "PAO-VAL-003",
            f"cannot render {exc.where}: {exc.message}",
            "Check the inputs against the form, and the template.",
        ) from exc
    data = [{"name": a.name, "type": a.type, "run": a.run, "spec": a.spec} for a in rendered]
    if g.output is not OutputFormat.table:
        emit({"item": item["metadata"]["id"], "inputs": values, "actions": data}, g.output)
        return
    for action in data:
        state = "" if action["run"] else "  (skipped: its `when` is false)"
        console.rule(f"{action['name']} ({action['type']}){state}")
        console.print(
            json.dumps(action["spec"], indent=2, ensure_ascii=False), markup=False, highlight=False
        )


@app.command("variables")
def variables(
    ctx: typer.Context,
    template_text: Annotated[
        str | None,
        typer.Option("--template", "-t", help="A template, e.g. '{{ inputs.name | slug }}'."),
    ] = None,
    item: Annotated[str | None, typer.Option("--item", help="A catalog item id.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="An action of --item.")] = None,
    context_file: Annotated[
        Path | None,
        typer.Option(
            "--context",
            "-c",
            help="Values by scope (YAML/JSON): {inputs: {...}, user: {...}}.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Run the variables engine on a template or an item's action: references, values, output."""
    from pao.devctl.inputs import load_inputs

    if (template_text is None) == (item is None) or (item is not None and not action):
        raise CliError(
            "PAO-CLI-004",
            "give --template, or --item with --action",
            "e.g. devctl test variables --template '{{ user.id }}'",
            exit_code=2,
        )
    g = globals_of(ctx)
    context = load_inputs(context_file)
    body = (
        {"template": template_text, "context": context}
        if template_text is not None
        else {"item_id": item, "action": action, "context": context}
    )
    answer = call(ctx, "POST", "/test/variables", body=body)
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
        return
    failed = False
    for explained in answer.get("templates") or [answer]:
        if "field" in explained:
            console.rule(explained["field"])
        failed |= _print_phases(explained)
    if "rendered" in answer:
        console.rule("rendered")
        console.print(
            json.dumps(answer["rendered"], indent=2, ensure_ascii=False),
            markup=False,
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


def _print_phases(explained: dict) -> bool:
    """Print one template's phases; True when a phase failed."""
    for error in explained["parse"].get("errors", []):
        console.print(
            f"parse error (line {error['line']}, column {error['column']}): {error['message']}",
            markup=False,
            style="red",
        )
    resolve = explained.get("resolve") or {}
    for ref in resolve.get("references", []):
        mark = "ok " if ref["resolved"] else "!! "
        shown = json.dumps(ref["value"], ensure_ascii=False) if ref["resolved"] else ref["problem"]
        console.print(f"{mark}{ref['path']} = {shown}", markup=False, highlight=False)
    filters = [
        f["name"] + ("" if f["known"] else " (unknown)")
        for f in explained["parse"].get("filters", [])
    ]
    if filters:
        console.print("filters: " + " -> ".join(filters), markup=False)
    substitute = explained.get("substitute") or {}
    for error in substitute.get("errors", []):
        console.print(f"render error: {error['message']}", markup=False, style="red")
    if substitute.get("ok"):
        console.print(
            f"output ({substitute['type']}): "
            + json.dumps(substitute["output"], ensure_ascii=False),
            markup=False,
            highlight=False,
        )
    return not (explained["parse"]["ok"] and resolve.get("ok", False) and substitute.get("ok"))
