"""Wiring the fulfilment service: its consumers, its executors and its worker."""

from __future__ import annotations

from pao.fulfillment import definitions, intake
from pao.fulfillment.breakers import Breakers
from pao.fulfillment.definitions import Definitions
from pao.fulfillment.executors import (
    Executor,
    JiraExecutor,
    JiraSettings,
    Missing,
    RestExecutor,
    TerraformExecutor,
)
from pao.fulfillment.jira import JiraClient
from pao.fulfillment.modules import ModuleCache
from pao.fulfillment.steps import Parts
from pao.fulfillment.terraform import TerraformRunner
from pao.fulfillment.worker import Worker
from pao.shared.environments import environments, system_scope
from pao.shared.runtime import Scope
from pao.shared.secrets import secret_provider

#: The fulfilment service's migrations.
MIGRATIONS = "pao.fulfillment.migrations"


async def parts_from_settings(scope: Scope) -> Parts:
    """The executors and settings the job handlers use."""
    settings = scope.settings
    session = await scope.session()
    secrets = secret_provider(settings)
    jira: JiraExecutor | None = None
    if settings.jira_url:
        token = settings.jira_token
        if token is None and settings.jira_token_secret:
            token = await secrets.get(settings.jira_token_secret)
        jira = JiraExecutor(
            JiraClient(
                settings.jira_url, session=session, username=settings.jira_username, token=token
            ),
            JiraSettings(correlation_field=settings.jira_correlation_field),
        )
    assert settings.database_url
    runner = TerraformRunner(
        work_root=settings.data_dir.resolve() / "terraform",
        state_dsn=settings.database_url,
        binary=settings.terraform_binary,
    )
    definitions_by_hash = Definitions(scope.pool)
    executors: dict[str, Executor] = {
        "jira": jira or Missing("jira", "no JIRA is configured (PAO_JIRA_URL)"),
        "terraform": TerraformExecutor(
            runner,
            settings.catalog_root,
            definitions=definitions_by_hash,
            modules=ModuleCache(scope.pool, runner.work_root / "modules"),
        ),
        "rest": RestExecutor(session),
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
        environments=environments(settings),
        poll_seconds=settings.jira_poll_seconds,
        default_poll_seconds=settings.jira_default_poll_seconds,
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
    return worker
