"""`devctl validate`: check catalog files offline (as CI does) or against the server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

if TYPE_CHECKING:
    from pao.spec.problems import Problem

from pao.devctl.context import call, globals_of
from pao.devctl.output import OutputFormat, console, emit, err_console

app = typer.Typer(help="Validate catalog files and requests.", no_args_is_help=True)


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        err_console.print(problem.format(), markup=False, highlight=False, soft_wrap=True)


def _semver(text: str) -> tuple[int, ...]:
    core = text.split("-", 1)[0]
    return tuple(int(p) for p in core.split(".")) if core.count(".") == 2 else (0, 0, 0)


def _bump_problem(path: Path, base_ref: str, data: dict) -> Problem | None:
    """A changed item must carry a higher version than at `base_ref`."""
    try:
        old_text = subprocess.run(  # noqa: S603
            ["git", "show", f"{base_ref}:./{path.name}"],  # noqa: S607
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None  # a new file: nothing to compare with
    try:
        old = yaml.safe_load(old_text)
        old_version = old["metadata"]["version"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    from pao.spec.problems import Problem

    new_version = (data.get("metadata") or {}).get("version", "")
    if old_text != path.read_text(encoding="utf-8") and _semver(new_version) <= _semver(
        old_version
    ):
        return Problem(
            "version-bump",
            f"the file changed since {base_ref} but its version "
            f"{new_version} is not above {old_version}",
            "/metadata/version",
            file=str(path),
        )
    return None


@app.command("catalog-item")
def catalog_item(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Item or bundle files (YAML or JSON).", exists=True, dir_okay=False, readable=True
        ),
    ],
    remote: Annotated[
        bool, typer.Option("--remote", help="Ask the server instead of checking here.")
    ] = False,
    base_ref: Annotated[
        str | None,
        typer.Option(
            "--base-ref", help="Also require a version bump for files changed since this git ref."
        ),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going", help="Check every file instead of stopping at the first invalid one."
        ),
    ] = False,
) -> None:
    """Check catalog files; prints `file:line: message` for each problem, exits 1 if any."""
    from pao.spec.problems import Problem
    from pao.spec.validation import validate_text

    g = globals_of(ctx)
    results = []
    failed = False
    for path in files:
        text = path.read_text(encoding="utf-8")
        if remote:
            answer = call(
                ctx,
                "POST",
                "/validate/catalog-item",
                raw=text.encode(),
                content_type="application/yaml",
                params={"filename": str(path)},
            )
            problems = [Problem(**p) for p in answer["problems"]]
        else:
            report = validate_text(text, str(path))
            problems = list(report.problems)
            if base_ref and report.data and not problems:
                bump = _bump_problem(path, base_ref, report.data)
                problems += [bump] if bump else []
        results.append(
            {"file": str(path), "valid": not problems, "problems": [p.as_dict() for p in problems]}
        )
        if problems:
            failed = True
            if g.output is OutputFormat.table:
                _print_problems(problems)
            if not keep_going:
                break
        elif g.output is OutputFormat.table:
            console.print(f"{path}: valid", markup=False, highlight=False)
    if g.output is not OutputFormat.table:
        emit({"valid": not failed, "files": results}, g.output)
    if failed:
        raise typer.Exit(1)


@app.command("catalog")
def catalog(
    ctx: typer.Context,
    root: Annotated[
        Path, typer.Argument(help="The catalog folder.", exists=True, file_okay=False)
    ] = Path("catalog"),
) -> None:
    """Check a whole catalog folder: every file, unique ids, paths, bundle references."""
    from pao.spec.catalog import read_directory, validate_catalog

    g = globals_of(ctx)
    report = validate_catalog(read_directory(root))
    problems = [p.at(file=str(root / p.file) if p.file else None) for p in report.problems]
    if g.output is not OutputFormat.table:
        emit(
            {
                "valid": report.valid,
                "version": report.snapshot.version if report.snapshot else None,
                "files": len(report.reports),
                "problems": [p.as_dict() for p in problems],
            },
            g.output,
        )
    elif report.valid:
        assert report.snapshot is not None
        console.print(
            f"{root}: {len(report.snapshot.items)} item(s), "
            f"{len(report.snapshot.bundles)} bundle(s), all valid "
            f"(version {report.snapshot.version})",
            markup=False,
            highlight=False,
        )
    else:
        _print_problems(problems)
    if not report.valid:
        raise typer.Exit(1)


@app.command("request")
def request(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="The catalog item id.")],
    inputs_file: Annotated[
        Path | None,
        typer.Option("--inputs", "-i", help="Inputs (YAML or JSON).", exists=True, dir_okay=False),
    ] = None,
    assignments: Annotated[
        list[str] | None, typer.Option("--set", help="An input as name=value (repeatable).")
    ] = None,
) -> None:
    """Check a request before submitting it: the form, then a dry render of every action."""
    from pao.devctl.inputs import load_inputs

    g = globals_of(ctx)
    inputs = load_inputs(inputs_file, assignments)
    answer = call(ctx, "POST", "/validate/request", body={"item_id": item, "inputs": inputs})
    if g.output is not OutputFormat.table:
        emit(answer, g.output)
    elif answer["valid"]:
        console.print(f"{item} {answer['item_version']}: the request is valid", markup=False)
        for action in answer["actions"]:
            state = "runs" if action["run"] else "skipped (its condition is false)"
            console.print(f"  {action['name']} ({action['type']}): {state}", markup=False)
    else:
        for problem in answer["problems"]:
            err_console.print(
                f"{problem['pointer']}: {problem['message']}", markup=False, highlight=False
            )
    if not answer["valid"]:
        raise typer.Exit(1)
