"""The catalog's JSON Schemas (2020-12), loaded once and shared by every validator."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMA_FILES = (
    "common-types.json",
    "catalog-item.json",
    "catalog-bundle.json",
    "form-schema.json",
)
BASE_URI = "https://pao.dev/schema/"


def schema_dir() -> Path:
    """Where the schemas are: $PAO_CATALOG_SCHEMA_DIR, the wheel's copy, or the repository's."""
    explicit = os.environ.get("PAO_CATALOG_SCHEMA_DIR")
    if explicit:
        return Path(explicit)
    packaged = Path(__file__).with_name("schema")
    if (packaged / "catalog-item.json").exists():
        return packaged
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "catalog" / "schema"
        if (candidate / "catalog-item.json").exists():
            return candidate
    raise FileNotFoundError("the catalog schemas were not found; set PAO_CATALOG_SCHEMA_DIR")


@cache
def load_schemas() -> dict[str, dict[str, Any]]:
    """Each schema by file name."""
    base = schema_dir()
    return {name: json.loads((base / name).read_text(encoding="utf-8")) for name in SCHEMA_FILES}


@cache
def registry() -> Registry:
    """A registry resolving `https://pao.dev/schema/<file>` references, also from item forms."""
    resources = [(s["$id"], Resource.from_contents(s)) for s in load_schemas().values()]
    return Registry().with_resources(resources)


@cache
def item_validator() -> Draft202012Validator:
    return Draft202012Validator(
        load_schemas()["catalog-item.json"], registry=registry(), format_checker=FormatChecker()
    )


@cache
def bundle_validator() -> Draft202012Validator:
    return Draft202012Validator(
        load_schemas()["catalog-bundle.json"], registry=registry(), format_checker=FormatChecker()
    )


@cache
def form_dialect_validator() -> Draft202012Validator:
    """Checks an item's form against the keywords PAO forms support."""
    return Draft202012Validator(load_schemas()["form-schema.json"], registry=registry())


def _compiled(name: str) -> Callable[[Any], Any]:
    # fastjsonschema turns a schema into Python code, far faster than interpreting it; it is the
    # fast path for valid documents. Our schemas use no keyword beyond what it implements
    # (draft-07 plus $defs, which resolve as plain JSON pointers).
    schemas = load_schemas()
    handlers = {"https": lambda uri: schemas[uri.rsplit("/", 1)[-1]]}
    return fastjsonschema.compile(
        schemas[name],
        handlers=handlers,
        formats={"date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    )


@cache
def fast_check(name: str) -> Callable[[Any], bool]:
    """A compiled yes/no check against one of the schemas."""
    compiled = _compiled(name)

    def check(data: Any) -> bool:
        try:
            compiled(data)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return check


_FORM_VALIDATORS: dict[int, tuple[Any, Draft202012Validator]] = {}


def form_validator(form_schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for an item's form (which may reference common types), kept per form object:
    served items are validated against many times."""
    hit = _FORM_VALIDATORS.get(id(form_schema))
    if hit is not None and hit[0] is form_schema:
        return hit[1]
    validator = Draft202012Validator(
        form_schema, registry=registry(), format_checker=FormatChecker()
    )
    if len(_FORM_VALIDATORS) > 1_000:
        _FORM_VALIDATORS.clear()
    _FORM_VALIDATORS[id(form_schema)] = (form_schema, validator)
    return validator
