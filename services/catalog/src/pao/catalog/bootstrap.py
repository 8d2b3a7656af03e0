"""Wiring the catalog's parts from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from pao.catalog.sources import CatalogSource, DirectorySource, GitSource
from pao.catalog.view import CatalogView
from pao.shared.eventstore import EventStore
from pao.shared.secrets import secret_provider
from pao.shared.settings import Settings


@dataclass
class CatalogParts:
    """What catalog endpoints and tasks share."""

    source: CatalogSource
    store: EventStore
    view: CatalogView = field(default_factory=CatalogView)


def source_from_settings(settings: Settings) -> CatalogSource:
    """The git source when PAO_CATALOG_GIT_URL is set, else the local directory."""
    if settings.catalog_git_url:
        token_provider = None
        if settings.catalog_git_token_secret:
            provider, path = secret_provider(settings), settings.catalog_git_token_secret

            async def token_provider() -> str:
                return await provider.get(path)

        return GitSource(
            settings.catalog_git_url,
            ref=settings.catalog_git_ref,
            subpath=settings.catalog_git_path,
            cache_dir=settings.data_dir.resolve() / "catalog-git",
            token=settings.catalog_git_token,
            token_provider=token_provider,
        )
    return DirectorySource(settings.catalog_dir.resolve())
