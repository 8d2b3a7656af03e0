"""`pao`: the operator's command. `pao serve` runs services (usually one per container),
`pao migrate` and `pao projections rebuild` look after the database, `pao secrets init` puts
PAO's own secrets in Parameter Store, `pao keys init` writes a key store with a new admin key
and `pao jira check` checks JIRA against the catalog.

Where the dev stack is installed (`pao-devstack`, never in production images), it adds
`pao up`, the whole stack on embedded parts, through the `pao.commands` entry points.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import structlog
import typer

from pao.gateway.bootstrap import unsafe_auth_mode
from pao.shared import tracing
from pao.shared.database import migrate
from pao.shared.database_access import DatabaseAccess, DatabaseSettingsError
from pao.shared.logs import configure_logging
from pao.shared.settings import Settings
from pao.stack import jira, secrets
from pao.stack.console import fail, load_keys, settings_with, stop_on_signals
from pao.stack.keys import app as keys_app
from pao.stack.runtime import MIGRATIONS, SERVICES, Running, run_services

app = typer.Typer(
    name="pao",
    help="Run PAO: services one per container (`pao serve`), or the whole stack locally "
    "(`pao up`, with the dev stack installed).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = structlog.get_logger("pao.stack")


@app.command()
def serve(
    services: Annotated[
        list[str],
        typer.Argument(help=f"One or more of: {', '.join(SERVICES)}.", show_default=False),
    ],
    port: Annotated[
        int | None,
        typer.Option(help="Gateway HTTP port.", envvar="PAO_HTTP_PORT", show_default="8080"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Gateway bind address.")] = None,
) -> None:
    """Run services against PAO_DATABASE_URL and PAO_KAFKA_BOOTSTRAP (usually one per container)."""
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        fail(f"unknown service(s) {', '.join(unknown)}; choose from: {', '.join(SERVICES)}")
    settings = settings_with(http_port=port, http_host=host)
    configure_logging(settings.log_level, settings.log_format)
    if not settings.database_url or not settings.kafka_bootstrap:
        fail("set PAO_DATABASE_URL and PAO_KAFKA_BOOTSTRAP (or use `pao up` for a local stack)")
    if "gateway" in services and (problem := unsafe_auth_mode(settings)):
        fail(problem)
    database_access(settings, settings.database_url or "")
    if settings.database_read_url:
        database_access(
            settings, settings.database_read_url, variable="PAO_DATABASE_READ_URL", writer=False
        )
    keys = load_keys(settings)

    async def main() -> None:
        stop = asyncio.Event()
        await stop_on_signals(stop)

        async def started(running: Running) -> None:
            log.info("services started", services=running.services, gateway=running.gateway_url)

        await run_services(settings, services, stop, keys=keys, on_started=started)

    tracing.configure("pao-" + "+".join(services))
    try:
        asyncio.run(main())
    finally:
        tracing.shutdown()


def database_access(
    settings: Settings, dsn: str, *, variable: str = "PAO_DATABASE_URL", writer: bool = True
) -> DatabaseAccess:
    """How the settings reach `dsn`; a DSN that does not fit them ends the command."""
    try:
        return DatabaseAccess.from_settings(settings, dsn, variable=variable, writer=writer)
    except DatabaseSettingsError as exc:
        fail(str(exc))
        raise


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply pending database migrations to PAO_DATABASE_URL."""
    settings = settings_with()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.database_url:
        fail("set PAO_DATABASE_URL")
    assert settings.database_url
    access = database_access(settings, settings.database_url)
    applied = asyncio.run(migrate(settings.database_url, MIGRATIONS, access=access))
    typer.echo(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m}" for m in applied))


projections_app = typer.Typer(help="Manage the read models.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")
app.add_typer(secrets.app, name="secrets")
app.add_typer(keys_app, name="keys")
app.add_typer(jira.app, name="jira")


@projections_app.command("rebuild")
def projections_rebuild(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A `pao up` state folder holding the database address (when no PAO_DATABASE_URL).",
            envvar="PAO_DATA_DIR",
            show_default=".pao",
        ),
    ] = None,
) -> None:
    """Empty the request read models and replay every event from position 0."""
    settings = settings_with(data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)
    stack_file = settings.data_dir / "stack.json"
    if not settings.database_url and stack_file.exists():
        settings = settings.model_copy(
            update={"database_url": json.loads(stack_file.read_text())["database"]}
        )
    if not settings.database_url:
        fail("set PAO_DATABASE_URL (or run it beside a running `pao up`)")
    assert settings.database_url
    from pao.request.bootstrap import rebuild_read_models

    async def run() -> int:
        from pao.shared.database import create_pool

        dsn = settings.database_url or ""
        access = database_access(settings, dsn)
        pool = await create_pool(dsn, min_size=1, max_size=2, access=access)
        try:
            return await rebuild_read_models(pool)
        finally:
            await pool.close()

    started = time.monotonic()
    applied = asyncio.run(run())
    typer.echo(
        f"rebuilt the request read models from {applied} event(s) in "
        f"{time.monotonic() - started:.1f} s"
    )


for command in entry_points(group="pao.commands"):
    app.command(command.name)(command.load())


def main() -> None:
    """Entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
