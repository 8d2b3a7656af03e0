"""`devctl test template`: render an item file's actions against sample inputs, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pao.devctl.context import globals_of
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
