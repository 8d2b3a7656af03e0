"""REST models of the catalog endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pao.contracts.commands import Mode


class ModeSwitch(BaseModel):
    """An operator's switch of an item's fulfilment mode: to what, by whom, when and why."""

    model_config = ConfigDict(frozen=True)

    mode: Mode
    by: str
    at: str
    reason: str


class CatalogItemSummary(BaseModel):
    """One line of `GET /catalog`. `mode` is the mode new requests run in: `default_mode`, or
    the operator's `mode_switch` while one is in effect."""

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
    default_mode: str
    modes: list[str]
    mode_switch: ModeSwitch | None = None


class ModeSwitchBody(BaseModel):
    """`POST /catalog/items/{item_id}/mode`."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode
    reason: str = Field(min_length=3, max_length=500)


class ModeState(BaseModel):
    """An item's fulfilment modes as they stand: `GET /catalog/items/{id}` (`modes`) and the
    answer of a switch (`changed`: whether the switch changed anything)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    mode: str
    default_mode: str
    modes: list[str]
    mode_switch: ModeSwitch | None = None
    changed: bool | None = None


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


def summary_of(
    item: dict[str, Any], *, modes: list[str], switch: ModeSwitch | None = None
) -> CatalogItemSummary:
    """The list-view summary of a catalog item document offering `modes`, with the operator's
    mode switch in effect, if any."""
    metadata = item["metadata"]
    fulfillment = item["fulfillment"]
    return CatalogItemSummary(
        id=metadata["id"],
        name=metadata["name"],
        category=metadata["category"],
        owner=metadata["owner"],
        version=metadata["version"],
        description=metadata["description"],
        tags=list(metadata.get("tags") or []),
        lifecycle=metadata.get("lifecycle", "active"),
        mode=switch.mode if switch is not None else fulfillment["mode"],
        default_mode=fulfillment["mode"],
        modes=modes,
        mode_switch=switch,
    )


class ItemVersion(BaseModel):
    """One definition of an item the catalog published."""

    model_config = ConfigDict(frozen=True)

    version: str
    item_hash: str
    published_at: datetime


class ItemVersions(BaseModel):
    """`GET /catalog/items/{item_id}/versions`: every definition published, oldest first (one
    published again unchanged is listed once)."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    versions: list[ItemVersion]


class ItemVersionDefinition(BaseModel):
    """`GET /catalog/items/{item_id}/versions/{version}`: the item as last published with it."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    version: str
    item_hash: str
    published_at: datetime
    item: dict[str, Any]
