"""Reading JSON request bodies into models, with errors that name the field at fault."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError

M = TypeVar("M", bound=BaseModel)

#: Deeper JSON than any PAO body needs; refused before recursive validators could overflow.
MAX_DEPTH = 64


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two readers of one body could otherwise pick different values for a repeated key.
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key!r} appears more than once")
        found[key] = value
    return found


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


class BodyRefused(ValueError):
    """Parsed JSON that PAO refuses, with the JSON pointer of the value at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no repeated keys, no NaN or infinities, nesting bounded by MAX_DEPTH, and
    strings PostgreSQL can store (no NUL, no lone surrogate)."""
    try:
        data = json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_float=_finite,
            parse_constant=_no_constant,
        )
    except RecursionError as exc:
        raise BodyRefused("body", f"the body nests deeper than {MAX_DEPTH} levels") from exc
    pending: list[tuple[Any, str, int]] = [(data, "", 1)]
    while pending:  # iterative, so that the check itself cannot overflow
        node, pointer, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise BodyRefused(pointer, f"the body nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key, pointer)  # a bad key is named by its object
                child = f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"
                pending.append((value, child, depth + 1))
        elif isinstance(node, list):
            pending.extend((value, f"{pointer}/{i}", depth + 1) for i, value in enumerate(node))
        elif isinstance(node, str):
            _check_text(node, pointer)
    return data


def _check_text(text: str, pointer: str) -> None:
    if "\x00" in text:
        raise BodyRefused(pointer, "a string holds a NUL character (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyRefused(pointer, "a string holds a lone surrogate (\\ud800-\\udfff)") from exc


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body as `model`: 415 unless JSON, 400 if not strict JSON, 422 listing every bad field."""
    if request.content_type not in ("application/json", ""):
        raise PaoError(
            errors.UNSUPPORTED_MEDIA_TYPE,
            f"send JSON (Content-Type: application/json), not {request.content_type}",
        )
    raw = await request.read()
    try:
        data = parse_json(raw or b"{}")
    except BodyRefused as exc:
        raise PaoError(
            errors.MALFORMED_BODY,
            f"the body is not accepted: {exc}",
            details=[ErrorDetail(field=exc.field or "body", message=str(exc))],
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError is one
        raise PaoError(
            errors.MALFORMED_BODY,
            f"the body is not JSON: {exc}",
            details=[ErrorDetail(field="body", message=str(exc))],
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            ErrorDetail(
                field="/" + "/".join(str(p) for p in e["loc"]) if e["loc"] else "body",
                message=e["msg"],
            )
            for e in exc.errors(include_url=False)
        ]
        raise PaoError(
            errors.INVALID_INPUT, "the request body is not valid", details=details
        ) from exc
