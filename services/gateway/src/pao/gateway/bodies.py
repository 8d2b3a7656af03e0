"""Reading JSON request bodies into models, with errors that name the field at fault."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError

M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body as `model`: 415 unless JSON, 400 if unparseable, 422 listing every bad field."""
    if request.content_type not in ("application/json", ""):
        raise PaoError(
            errors.UNSUPPORTED_MEDIA_TYPE,
            f"send JSON (Content-Type: application/json), not {request.content_type}",
        )
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
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
