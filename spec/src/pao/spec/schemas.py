"""The catalog's JSON Schemas (2020-12), loaded once and shared by every validator."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import regex
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema import _keywords as keywords
from jsonschema.exceptions import ValidationError
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


#: Longest one `pattern` (or `patternProperties` key) of a form may take to match one value.
PATTERN_TIMEOUT = 0.05
#: Longest all the pattern matches of one validation (a document's examples, a request's
#: inputs) may take together: many values each just under PATTERN_TIMEOUT add up.
PATTERN_BUDGET = 0.5
#: The `validator` of the error a pattern that ran out of time gives (and the problem's rule).
PATTERN_TIMEOUT_RULE = "pattern-timeout"

_budget = threading.local()


@contextlib.contextmanager
def pattern_budget(seconds: float = PATTERN_BUDGET) -> Iterator[None]:
    """Hold every pattern match inside to `seconds` in all (an outer budget stays in force)."""
    outer = getattr(_budget, "until", None)
    _budget.until = time.monotonic() + seconds if outer is None else outer
    try:
        yield
    finally:
        _budget.until = outer


class _PatternTimedOut(Exception):
    def __init__(self, pattern: str, message: str) -> None:
        self.pattern = pattern
        self.message = message


def _search(pattern: str, text: str) -> bool:
    """`re.search` as JSON Schema means it, stopped after PATTERN_TIMEOUT.

    Forms are written by catalog authors and sent to `validate/catalog-item` by anyone; a match in
    Python's `re` (what jsonschema uses) cannot be interrupted, one in `regex` can.
    """
    timeout = PATTERN_TIMEOUT
    until = getattr(_budget, "until", None)
    if until is not None:
        timeout = min(timeout, until - time.monotonic())
        if timeout <= 0:
            raise _PatternTimedOut(
                pattern,
                f"the form's patterns took longer than {PATTERN_BUDGET * 1000:.0f} ms in all; "
                f"{pattern!r} was not matched",
            )
    try:
        return regex.search(pattern, text, timeout=timeout) is not None
    except TimeoutError:
        raise _PatternTimedOut(
            pattern,
            f"pattern {pattern!r} took longer than {PATTERN_TIMEOUT * 1000:.0f} ms to match; "
            "simplify it (nested repetition such as (a+)+ backtracks without end)",
        ) from None
    except regex.error as exc:
        raise _PatternTimedOut(
            pattern, f"pattern {pattern!r} is not a regular expression: {exc}"
        ) from None


def _timeout_error(timed_out: _PatternTimedOut, key: str | None = None) -> ValidationError:
    """The error of a pattern that ran out of time (at `key` when it was matched to a key)."""
    return ValidationError(
        timed_out.message,
        validator=PATTERN_TIMEOUT_RULE,
        validator_value=timed_out.pattern,
        path=() if key is None else (key,),
    )


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = _search(pattern, instance)
    except _PatternTimedOut as exc:
        yield _timeout_error(exc)
        return
    if not matched:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            try:
                matched = _search(pattern, key)
            except _PatternTimedOut as exc:
                yield _timeout_error(exc, key)
                return
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """jsonschema's `additionalProperties`, with `patternProperties` matched under the limit."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties") or {}
    patterns = list(schema.get("patternProperties") or {})
    extras = []
    for key in instance:
        if key in properties:
            continue
        try:
            if any(_search(pattern, key) for pattern in patterns):
                continue
        except _PatternTimedOut as exc:
            yield _timeout_error(exc, key)
            return
        extras.append(key)
    yield from keywords.additionalProperties(
        validator, extra, {key: instance[key] for key in extras}, {"additionalProperties": extra}
    )


def uses_pattern_properties(schema: Any) -> bool:
    """Whether `patternProperties` appears anywhere in a schema."""
    if isinstance(schema, dict):
        return "patternProperties" in schema or any(
            uses_pattern_properties(v) for v in schema.values()
        )
    if isinstance(schema, list):
        return any(uses_pattern_properties(v) for v in schema)
    return False


def _unevaluated_properties(
    validator: Any, value: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    # jsonschema decides which keys `patternProperties` evaluated with `re`, out of reach of a
    # time limit: forms may not combine the two (validation refuses such a form).
    if validator.is_type(instance, "object") and uses_pattern_properties(validator.schema):
        yield ValidationError(
            "unevaluatedProperties cannot be combined with patternProperties in a form",
            validator=PATTERN_TIMEOUT_RULE,
            validator_value=value,
        )
        return
    yield from keywords.unevaluatedProperties(validator, value, instance, schema)


#: Draft 2020-12 with every pattern of the schema matched under a time limit: the validator for
#: forms, which are not PAO's own schemas.
BoundedValidator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
    },
)

_FORM_VALIDATORS: dict[int, tuple[Any, Draft202012Validator]] = {}


def form_validator(form_schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for an item's form (which may reference common types), kept per form object:
    served items are validated against many times."""
    hit = _FORM_VALIDATORS.get(id(form_schema))
    if hit is not None and hit[0] is form_schema:
        return hit[1]
    validator = BoundedValidator(form_schema, registry=registry(), format_checker=FormatChecker())
    if len(_FORM_VALIDATORS) > 1_000:
        _FORM_VALIDATORS.clear()
    _FORM_VALIDATORS[id(form_schema)] = (form_schema, validator)
    return validator
