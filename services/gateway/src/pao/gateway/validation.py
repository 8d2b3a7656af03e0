"""Phase 3 routes (catalog part): validate a catalog item document as CI and authors would."""

from __future__ import annotations

import asyncio

from aiohttp import web

from pao.contracts import errors
from pao.contracts.catalog import ProblemOut, ValidationResult
from pao.contracts.errors import PaoError
from pao.spec.validation import validate_text

routes = web.RouteTableDef()

_TEXT_TYPES = {
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "text/plain",
    "application/octet-stream",
    "",
}


@routes.post("/api/v1/validate/catalog-item")
async def validate_catalog_item(request: web.Request) -> web.Response:
    """Every problem of a YAML or JSON item (or bundle), with JSON pointer and line."""
    if request.content_type not in _TEXT_TYPES:
        raise PaoError(
            errors.UNSUPPORTED_MEDIA_TYPE,
            f"send the item as YAML or JSON, not {request.content_type}",
        )
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PaoError(errors.MALFORMED_BODY, "the body is not UTF-8 text") from exc
    name = request.query.get("filename") or None
    report = await asyncio.to_thread(validate_text, text, name)
    result = ValidationResult(
        valid=report.valid,
        kind=report.kind,
        id=report.id if isinstance(report.id, str) else None,
        problems=[ProblemOut(**p.as_dict()) for p in report.problems],
    )
    return web.json_response(result.model_dump(mode="json"))
