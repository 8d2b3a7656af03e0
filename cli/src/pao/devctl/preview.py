"""`devctl preview form`: an item's form in the terminal, or filled in field by field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from pao.devctl.context import call, globals_of
from pao.devctl.inputs import dump_inputs, load_inputs
from pao.devctl.output import OutputFormat, console, emit, err_console

app = typer.Typer(help="See forms before requesting a service.", no_args_is_help=True)

_MAX_ROUNDS = 200


def _constraint_text(field: dict[str, Any]) -> str:
    parts = []
    if field.get("enum"):
        parts.append("one of " + ", ".join(map(str, field["enum"])))
    c = field.get("constraints") or {}
    if "const" in c:
        parts.append(f"must be {c['const']}")
    for key, label in (
        ("minimum", ">="),
        ("maximum", "<="),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("pattern", "matches"),
    ):
        if key in c:
            parts.append(f"{label} {c[key]}")
    return "; ".join(parts)


def _show(form: dict[str, Any], fmt: OutputFormat) -> None:
    if fmt is not OutputFormat.table:
        emit(form, fmt)
        return
    console.print(f"[bold]{form['title']}[/bold] ({form['item_id']} {form['item_version']})")
    console.print(form["description"], markup=False)
    visible = [f for f in form["fields"] if f["visible"]]
    emit(
        None,
        fmt,
        columns=["field", "label", "type", "required", "default", "allowed", "help"],
        rows=[
            (
                f["name"],
                f["label"],
                f["type"],
                f["required"],
                f["default"],
                _constraint_text(f),
                f.get("help"),
            )
            for f in visible
        ],
    )
    hidden = [f["name"] for f in form["fields"] if not f["visible"]]
    if hidden:
        console.print(f"shown when a condition applies: {', '.join(hidden)}", markup=False)
    for problem in form["problems"]:
        console.print(f"  needs: {problem['pointer']}: {problem['message']}", markup=False)


def _convert(field: dict[str, Any], raw: str) -> Any:
    kind = field["type"]
    if kind == "integer":
        return int(raw)
    if kind == "number":
        return float(raw)
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in ("y", "yes", "true", "1"):
            return True
        if lowered in ("n", "no", "false", "0"):
            return False
        raise ValueError("answer yes or no")
    if field.get("enum") and not isinstance(field["enum"][0], str):
        return type(field["enum"][0])(raw)
    return raw


def _check(field: dict[str, Any], value: Any) -> str | None:
    """Why a value breaks the field's constraints, or None."""
    c = field.get("constraints") or {}
    if field.get("enum") and value not in field["enum"]:
        return "choose one of " + ", ".join(map(str, field["enum"]))
    if "const" in c and value != c["const"]:
        return f"must be {c['const']}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in c and value < c["minimum"]:
            return f"at least {c['minimum']}"
        if "maximum" in c and value > c["maximum"]:
            return f"at most {c['maximum']}"
    if isinstance(value, str):
        if "pattern" in c and not re.search(c["pattern"], value):
            return f"must match {c['pattern']}"
        if "minLength" in c and len(value) < c["minLength"]:
            return f"at least {c['minLength']} characters"
        if "maxLength" in c and len(value) > c["maxLength"]:
            return f"at most {c['maxLength']} characters"
    return None


def _ask(field: dict[str, Any], current: Any) -> Any:
    """Prompt until the answer fits the field; an empty answer skips an optional field."""
    label = field["label"] + ("" if field["required"] else " (optional)")
    allowed = _constraint_text(field)
    if field.get("help"):
        console.print(f"[dim]{field['help']}[/dim]")
    if allowed:
        console.print(f"[dim]{allowed}[/dim]", highlight=False)
    default = current if current is not None else field.get("default")
    while True:
        raw = typer.prompt(
            label,
            default=""
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else str(default),
            show_default=True,
        )
        if raw == "" and not field["required"]:
            return None
        try:
            value = _convert(field, raw)
        except ValueError as exc:
            err_console.print(f"  {exc or 'not a ' + field['type']}", style="red")
            continue
        problem = _check(field, value)
        if problem is None:
            return value
        err_console.print(f"  {problem}", style="red", markup=False)


def fill_form(ctx: typer.Context, item: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Ask each visible field until the form is complete; conditions are re-evaluated."""
    asked: set[str] = set()
    for _ in range(_MAX_ROUNDS):
        form = call(ctx, "POST", "/preview/form", body={"item_id": item, "inputs": inputs})
        for hidden in (f["name"] for f in form["fields"] if not f["visible"]):
            inputs.pop(hidden, None)  # a condition no longer applies: its field goes too
        pending = [f for f in form["fields"] if f["visible"] and f["name"] not in asked]
        if not pending:
            failing = {
                p["pointer"].split("/")[2] for p in form["problems"] if p["pointer"].count("/") >= 2
            }
            retry = [f for f in form["fields"] if f["visible"] and f["name"] in failing]
            if not retry:
                return inputs
            for problem in form["problems"]:
                err_console.print(
                    f"{problem['pointer']}: {problem['message']}", style="red", markup=False
                )
            asked -= {f["name"] for f in retry}
            continue
        field = pending[0]
        asked.add(field["name"])
        value = _ask(field, inputs.get(field["name"]))
        if value is None:
            inputs.pop(field["name"], None)
        else:
            inputs[field["name"]] = value
    return inputs


@app.command("form")
def form(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="The catalog item id.")],
    inputs_file: Annotated[
        Path | None,
        typer.Option(
            "--inputs", "-i", help="Inputs so far (YAML or JSON).", exists=True, dir_okay=False
        ),
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive", help="Ask for each visible field, then write the inputs file."
        ),
    ] = False,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", help="Where --interactive writes the inputs [default: ITEM-inputs.yaml]."
        ),
    ] = None,
) -> None:
    """Show an item's form: fields in order, what is required, what a condition reveals."""
    g = globals_of(ctx)
    inputs = load_inputs(inputs_file)
    if not interactive:
        _show(
            call(ctx, "POST", "/preview/form", body={"item_id": item, "inputs": inputs}), g.output
        )
        return
    filled = fill_form(ctx, item, inputs)
    target = save or Path(f"{item}-inputs.yaml")
    dump_inputs(filled, target)
    console.print(
        f"wrote {target}; request it with: devctl request submit {item} --inputs {target}",
        markup=False,
        highlight=False,
    )
