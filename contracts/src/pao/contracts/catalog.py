"""REST models of the catalog endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class CatalogItemSummary(BaseModel):
    """One line of `GET /catalog`."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    category: str
    owner: str
    version: str
    description: str
    tags: list[str]
    lifecycle: str
    mode: str


class CatalogPage(BaseModel):
    """`GET /catalog`: a page of items matching the filters."""

    model_config = ConfigDict(frozen=True)

    catalog_version: str | None
    total: int
    limit: int
    offset: int
    items: list[CatalogItemSummary]


class ProblemOut(BaseModel):
    """A problem in a catalog file."""

    model_config = ConfigDict(frozen=True)

    rule: str
    message: str
    pointer: str
    file: str | None = None
    line: int | None = None
    column: int | None = None


class RefreshResult(BaseModel):
    """`POST /catalog/refresh`: what changed (or why nothing did)."""

    model_config = ConfigDict(frozen=True)

    status: Literal["updated", "unchanged", "failed"]
    catalog_version: str | None
    previous_version: str | None
    source: str
    revision: str | None = None
    added: list[str] = []
    updated: list[str] = []
    removed: list[str] = []
    problems: list[ProblemOut] = []


class ValidationResult(BaseModel):
    """`POST /validate/catalog-item`: every problem of one file."""

    model_config = ConfigDict(frozen=True)

    valid: bool
    kind: str | None = None
    id: str | None = None
    problems: list[ProblemOut] = []


def summary_of(item: dict[str, Any]) -> CatalogItemSummary:
    """The list-view summary of a catalog item document."""
    metadata = item["metadata"]
    return CatalogItemSummary(
        id=metadata["id"],
        name=metadata["name"],
        category=metadata["category"],
        owner=metadata["owner"],
        version=metadata["version"],
        description=metadata["description"],
        tags=list(metadata.get("tags") or []),
        lifecycle=metadata.get("lifecycle", "active"),
        mode=item["fulfillment"]["mode"],
    )
