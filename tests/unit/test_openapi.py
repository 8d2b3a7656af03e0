"""The OpenAPI document: committed copy up to date, valid OpenAPI 3.1, and equal to what the
gateway serves (every route it registers under /api/v1, nothing more)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from pao.catalog.bootstrap import CatalogParts
from pao.catalog.sources import DirectorySource
from pao.contracts import errors
from pao.contracts.openapi import (
    PREFIX,
    REQUEST_SORTS,
    REQUEST_STATUSES,
    RESOURCE_STATES,
    document,
)
from pao.gateway import middleware
from pao.gateway.app import create_app
from pao.request import queries
from pao.shared.eventstore import EventStore
from pao.shared.keystore import KeyStore
from pao.shared.secrets import EnvSecrets
from pao.shared.settings import Settings
from support.documents import refs, resolve

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate it: python -m pao.contracts.openapi > docs/openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def _served_routes() -> set[tuple[str, str]]:
    """Method and path template of every route the gateway's application registers."""
    settings = Settings(database_url="postgresql://unused@127.0.0.1:1/unused")
    # Building the application opens no connection, so it needs no pool.
    store = EventStore(None)  # type: ignore[arg-type]
    app = create_app(
        settings,
        keys=KeyStore([]),
        pool=None,  # type: ignore[arg-type]
        catalog_parts=CatalogParts(source=DirectorySource(REPO / "catalog"), store=store),
        readiness_checks=[],
        secrets=EnvSecrets(),
    )
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and isinstance(route.resource, web.AbstractResource)
    }


def test_the_committed_document_is_the_generated_one(doc: dict[str, Any]) -> None:
    committed = REPO / "docs" / "openapi.json"
    assert committed.exists(), REGENERATE
    assert json.loads(committed.read_text(encoding="utf-8")) == doc, REGENERATE


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    for ref in refs(doc):
        resolve(doc, ref)


def test_every_operation_has_an_id_and_answers(doc: dict[str, Any]) -> None:
    operations = _operations(doc)
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids)), "operationIds repeat"
    for key, operation in operations.items():
        assert operation["responses"], key
        assert any(s.startswith("2") for s in operation["responses"]), key


def test_the_document_describes_exactly_the_routes_the_gateway_serves(
    doc: dict[str, Any],
) -> None:
    served = {(m, p) for m, p in _served_routes() if p.startswith(PREFIX + "/")}
    described = set(_operations(doc))
    assert served - described == set(), "served but not in the document"
    assert described - served == set(), "in the document but not served"


def test_the_public_operations_are_the_ones_the_gateway_lets_in_unsigned(
    doc: dict[str, Any],
) -> None:
    security = {path: op["security"] for (_, path), op in _operations(doc).items()}
    assert {p for p, s in security.items() if s == []} == middleware.PUBLIC_PATHS
    assert {p for p, s in security.items() if s == [{"githubHmac": []}]} == (
        middleware.SELF_AUTHENTICATED_PATHS
    )
    assert all(
        s == [{"sigv4": []}]
        for p, s in security.items()
        if p not in (middleware.PUBLIC_PATHS | middleware.SELF_AUTHENTICATED_PATHS)
    )
    scheme = doc["components"]["securitySchemes"]["sigv4"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "execute-api" in scheme["description"]


def test_every_error_answer_is_the_envelope_under_its_codes_status(doc: dict[str, Any]) -> None:
    for key, operation in _operations(doc).items():
        for status, answer in operation["responses"].items():
            if status == "503" and key[1].endswith("/health/ready"):
                continue  # readiness answers its own report
            if not status.startswith(("4", "5")):
                continue
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (key, status)
            codes = [c for c in errors.REGISTRY if f"`{c}`" in answer["description"]]
            assert codes, (key, status)
            assert {errors.REGISTRY[c].http_status for c in codes} == {int(status)}, (key, status)


def test_a_signed_submit_names_its_errors_and_headers(doc: dict[str, Any]) -> None:
    submit = doc["paths"]["/api/v1/requests"]["post"]
    assert {"400", "401", "403", "404", "409", "413", "415", "422", "500", "503"} <= set(
        submit["responses"]
    )
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitBody"
    }
    headers = [resolve(doc, p["$ref"])["name"] for p in submit["parameters"] if "$ref" in p]
    assert headers == ["X-Correlation-ID", "Idempotency-Key"]
    assert "Retry-After" in submit["responses"]["503"]["headers"]


def test_query_parameters_carry_the_handlers_bounds(doc: dict[str, Any]) -> None:
    listing = doc["paths"]["/api/v1/requests"]["get"]
    query = {p["name"]: p["schema"] for p in listing["parameters"] if p.get("in") == "query"}
    assert query["limit"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    assert query["created_after"]["format"] == "date-time"
    logs = doc["paths"]["/api/v1/requests/{request_id}/logs"]["get"]
    assert "429" in logs["responses"]
    assert {p["name"] for p in logs["parameters"] if p.get("in") == "path"} == {"request_id"}


def test_enumerated_query_values_are_the_ones_the_queries_accept() -> None:
    assert REQUEST_STATUSES == queries.STATUSES
    assert set(REQUEST_SORTS) == set(queries.SORTS)
    assert RESOURCE_STATES == queries.RESOURCE_STATES
