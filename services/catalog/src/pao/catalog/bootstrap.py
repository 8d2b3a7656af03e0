"""Wiring the catalog service's parts from settings: its source, its served view, its follower."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from pao.catalog.follower import follow_catalog
from pao.catalog.modules import ModuleSnapshots
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import CatalogSource, DirectorySource, GitSource, SourceError
from pao.catalog.view import CatalogView
from pao.shared.eventstore import EventStore
from pao.shared.runtime import Scope
from pao.shared.secrets import SecretNotFound, secret_provider
from pao.shared.settings import Settings

log = structlog.get_logger("pao.catalog")


@dataclass
class CatalogParts:
    """What catalog endpoints and tasks share."""

    source: CatalogSource
    store: EventStore
    view: CatalogView = field(default_factory=CatalogView)


def source_from_settings(settings: Settings) -> CatalogSource:
    """The git source when PAO_CATALOG_GIT_URL is set, else the local directory; git module
    sources are fetched into PAO_DATA_DIR/module-git."""
    modules = ModuleSnapshots(settings.data_dir.resolve() / "module-git")
    if settings.catalog_git_url:
        token_provider = None
        # The token is an HTTPS header; other transports never ask for it.
        if settings.catalog_git_token_secret and settings.catalog_git_url.startswith("https://"):
            provider, path = secret_provider(settings), settings.catalog_git_token_secret

            async def token_provider() -> str | None:
                try:
                    return await provider.get(path)
                except SecretNotFound as exc:
                    log.info("git catalog fetched without a token", reason=str(exc))
                    return None

        return GitSource(
            settings.catalog_git_url,
            ref=settings.catalog_git_ref,
            subpath=settings.catalog_git_path,
            cache_dir=settings.data_dir.resolve() / "catalog-git",
            token=settings.catalog_git_token,
            token_provider=token_provider,
            modules=modules,
        )
    return DirectorySource(settings.catalog_dir.resolve(), modules=modules)


async def start_view(scope: Scope, parts: CatalogParts) -> None:
    """Load the served catalog from the store, refresh it from its source, then follow it."""
    await parts.view.catch_up(parts.store)
    if scope.settings.catalog_refresh_on_start:
        try:
            result = await refresh_catalog(
                source=parts.source, store=parts.store, view=parts.view, actor="pao"
            )
            log.info(
                "catalog loaded",
                status=result.status,
                version=result.catalog_version,
                problems=len(result.problems),
            )
        except SourceError as exc:
            log.error("catalog source unavailable; serving the stored catalog", error=str(exc))
    scope.spawn(
        "catalog-follower", follow_catalog(scope.settings, parts.store, parts.view, scope.stop)
    )
