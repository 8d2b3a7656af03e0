"""`pao jira check`: is the configured JIRA ready for the catalog's manual actions?"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from pao.fulfillment.bootstrap import jira_checks
from pao.shared.logs import configure_logging
from pao.stack.console import Output, fail, running_stack, settings_with

app = typer.Typer(help="PAO's JIRA.", no_args_is_help=True)

_MARKS = {"ok": ("ok", "green"), "fail": ("FAIL", "red"), "warn": ("warn", "yellow")}


@app.command("check")
def check(
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="Catalog folder whose items' JIRA use is checked.",
            show_default="PAO_CATALOG_DIR, or the git catalog's checkout",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A `pao up` state folder: its JIRA is checked when PAO_JIRA_URL is unset.",
            envvar="PAO_DATA_DIR",
            show_default=".pao",
        ),
    ] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
) -> None:
    """Check that JIRA answers and takes PAO's credentials, and has every project, issue type,
    the correlation field and the statuses the catalog's items use; exits 1 if a check fails."""
    settings = settings_with(data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)
    if not settings.jira_url and (stack := running_stack(settings)):
        jira = stack["components"]["jira"]
        settings = settings.model_copy(
            update={
                "jira_url": jira["address"],
                "jira_correlation_field": jira.get(
                    "correlation_field", settings.jira_correlation_field
                ),
            }
        )
    if not settings.jira_url:
        fail("set PAO_JIRA_URL (or run it beside a running `pao up`)")
    root = (catalog or settings.catalog_root).resolve()
    if not root.is_dir():
        fail(f"no catalog folder at {root}: pass --catalog")
    checks = asyncio.run(jira_checks(settings, root))
    failed = [c for c in checks if c.outcome == "fail"]
    if output is Output.json:
        document = {
            "jira_url": settings.jira_url,
            "catalog": str(root),
            "ok": not failed,
            "checks": [
                {"name": c.name, "outcome": c.outcome, "detail": c.detail, "fix": c.fix}
                for c in checks
            ],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark, colour = _MARKS.get(c.outcome, (c.outcome, "white"))
            typer.secho(f"{mark:<4}  {c.name:<{width}}  {c.detail}", fg=colour)
            if c.fix and c.outcome != "ok":
                typer.echo(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
        counts = {o: sum(c.outcome == o for c in checks) for o in ("ok", "fail", "warn", "skip")}
        typer.echo(
            f"{len(checks)} checks: {counts['ok']} ok, {counts['fail']} failed, "
            f"{counts['warn']} warnings, {counts['skip']} not checkable"
        )
    if failed:
        raise typer.Exit(1)
