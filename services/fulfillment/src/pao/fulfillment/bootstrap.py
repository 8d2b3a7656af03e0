"""Wiring the fulfilment service: its consumers, its executors and its worker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog

from pao.fulfillment import definitions, intake, jobs
from pao.fulfillment.breakers import Breakers
from pao.fulfillment.definitions import Definitions
from pao.fulfillment.executors import (
    Executor,
    JiraExecutor,
    JiraSettings,
    Missing,
    TerraformExecutor,
)
from pao.fulfillment.jira import JiraClient
from pao.fulfillment.jira_check import Check, catalog_jira_use, check_jira
from pao.fulfillment.modules import ModuleCache
from pao.fulfillment.rest import RestExecutor
from pao.fulfillment.restauth import AwsAccess
from pao.fulfillment.state_logins import StateLogins
from pao.fulfillment.steps import Parts
from pao.fulfillment.terraform import TerraformRunner
from pao.fulfillment.tickets import Tickets
from pao.fulfillment.worker import Worker
from pao.shared.database_access import DatabaseAccess
from pao.shared.environments import environments, system_scope
from pao.shared.metrics import sample_every
from pao.shared.runtime import Scope
from pao.shared.secrets import SecretNotFound, SecretProvider, secret_provider
from pao.shared.settings import Settings

#: The fulfilment service's migrations.
MIGRATIONS = "pao.fulfillment.migrations"

log = structlog.get_logger("pao.fulfillment")


@dataclass(frozen=True)
class JiraCredentials:
    """The JIRA token, and where it came from or why there is none (never the token)."""

    token: str | None
    source: str


async def jira_credentials(settings: Settings, secrets: SecretProvider) -> JiraCredentials:
    """PAO_JIRA_TOKEN, else the secret at PAO_JIRA_TOKEN_SECRET; a missing secret means no
    token (a JIRA that needs one then answers 401, which `pao jira check` reports)."""
    if settings.jira_token is not None:
        return JiraCredentials(settings.jira_token, "token from PAO_JIRA_TOKEN")
    if not settings.jira_token_secret:
        return JiraCredentials(None, "no token configured")
    try:
        token = await secrets.get(settings.jira_token_secret)
    except SecretNotFound as exc:
        return JiraCredentials(None, f"no token: {exc}")
    return JiraCredentials(token, f"token from secret {settings.jira_token_secret}")


async def jira_checks(settings: Settings, catalog_root: Path) -> list[Check]:
    """`pao jira check`: the configured JIRA against what the catalog's items ask of it."""
    assert settings.jira_url
    credentials = await jira_credentials(settings, secret_provider(settings))
    source = credentials.source + (
        f" as {settings.jira_username}" if settings.jira_username else ""
    )
    async with aiohttp.ClientSession() as session:
        client = JiraClient(
            settings.jira_url,
            session=session,
            username=settings.jira_username,
            token=credentials.token,
        )
        return await check_jira(
            client,
            catalog_jira_use(catalog_root),
            correlation_field=settings.jira_correlation_field,
            credentials=source,
        )


async def parts_from_settings(scope: Scope) -> Parts:
    """The executors and settings the job handlers use."""
    settings = scope.settings
    session = await scope.session()
    secrets = secret_provider(settings)
    jira: JiraExecutor | None = None
    if settings.jira_url:
        credentials = await jira_credentials(settings, secrets)
        if credentials.token is None and settings.jira_token_secret:
            log.warning("JIRA is called without credentials", reason=credentials.source)
        jira = JiraExecutor(
            JiraClient(
                settings.jira_url,
                session=session,
                username=settings.jira_username,
                token=credentials.token,
            ),
            JiraSettings(correlation_field=settings.jira_correlation_field),
            Tickets(scope.pool),
        )
    assert settings.database_url
    state_dsn = settings.terraform_state_url or settings.database_url
    state_access = DatabaseAccess.from_settings(
        settings,
        state_dsn,
        variable="PAO_TERRAFORM_STATE_URL" if settings.terraform_state_url else "PAO_DATABASE_URL",
    )
    runner = TerraformRunner(
        work_root=settings.data_dir.resolve() / "terraform",
        state_dsn=state_dsn,
        binary=settings.terraform_binary,
        passthrough_env=settings.terraform_passthrough_env,
        state_logins=StateLogins(
            state_dsn, mode=settings.terraform_state_roles, access=state_access
        ),
        state_access=state_access,
    )
    definitions_by_hash = Definitions(scope.pool)
    by_environment = environments(settings)
    executors: dict[str, Executor] = {
        "jira": jira or Missing("jira", "no JIRA is configured (PAO_JIRA_URL)"),
        "terraform": TerraformExecutor(
            runner,
            settings.catalog_root,
            definitions=definitions_by_hash,
            modules=ModuleCache(scope.pool, runner.work_root / "modules"),
        ),
        "rest": RestExecutor(
            session,
            environments=by_environment,
            allowed_hosts=settings.rest_allowed_hosts,
            aws=AwsAccess(region=settings.aws_region, endpoint_url=settings.aws_endpoint_url),
        ),
    }
    return Parts(
        pool=scope.pool,
        store=scope.store,
        definitions=definitions_by_hash,
        executors=executors,
        manual=jira,
        breakers=Breakers(
            threshold=settings.breaker_threshold, open_seconds=settings.breaker_seconds
        ),
        secrets=secrets,
        system=system_scope(settings),
        environments=by_environment,
        poll_seconds=settings.jira_poll_seconds,
        default_poll_seconds=settings.jira_default_poll_seconds,
        park_limit_seconds=settings.fulfillment_park_limit_seconds,
    )


async def start(scope: Scope) -> Worker:
    """Learn item definitions and requests from their events; run a worker beside any others."""
    await scope.consume(definitions.CONSUMER, definitions.HANDLERS)
    await scope.consume(intake.CONSUMER, intake.HANDLERS)
    settings = scope.settings
    worker = Worker(
        await parts_from_settings(scope),
        concurrency=settings.fulfillment_concurrency,
        lease=settings.fulfillment_lease_seconds,
    )
    scope.spawn("fulfillment-worker", worker.run(scope.stop))
    scope.spawn(
        "fulfillment-metrics", sample_every(scope.stop, lambda: jobs.sample_backlog(scope.pool))
    )
    return worker
