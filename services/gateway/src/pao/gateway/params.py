"""Reading query parameters with errors that name the parameter at fault."""

from __future__ import annotations

from aiohttp import web

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError


def int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        message = f"{name} must be an integer from {low} to {high}, not {raw!r}"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field=name, message=message)]
        )
    return value


def text_param(request: web.Request, name: str, *, max_length: int = 200) -> str | None:
    """A free-text query parameter, bounded in length."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        message = f"{name} is longer than {max_length} characters"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field=name, message=message)]
        )
    if "\x00" in raw:
        # PostgreSQL text cannot hold NUL; refused here rather than failing in the query.
        message = f"{name} must not contain a NUL character"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field=name, message=message)]
        )
    return raw
