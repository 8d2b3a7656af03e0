"""The OpenAPI 3.1 document of PAO's REST API (`python -m pao.contracts.openapi`).

Request bodies and the answers that have a model come from the models in `pao.contracts`; the
answers the gateway builds from read-model rows are described by short schemas written here.
Each operation's error answers come from the error codes it can raise, grouped by their HTTP
status. `docs/openapi.json` holds a copy that a unit test keeps equal to this output, and another
test keeps the operations equal to the routes the gateway serves; the gateway serves the document
at `GET /api/v1/openapi.json`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel

from pao.contracts import errors
from pao.contracts.audit import AuditPage
from pao.contracts.auth import PortalLink, SignInBody, SignInInfo, SignInSession
from pao.contracts.catalog import (
    CatalogPage,
    ItemVersionDefinition,
    ItemVersions,
    ModeState,
    ModeSwitchBody,
    RefreshResult,
    ValidationResult,
)
from pao.contracts.errors import ErrorCode, ErrorResponse
from pao.contracts.health import Health, Readiness, Version
from pao.contracts.history import HistoryPage
from pao.contracts.preview import PreviewFormBody, TestVariablesBody, ValidateRequestBody
from pao.contracts.requests import (
    AbortBody,
    DecisionBody,
    DecommissionBody,
    EscalateBody,
    SubmitBody,
    UpdateResourceBody,
)
from pao.contracts.stats import PlatformStats

OPENAPI_VERSION = "3.1.0"
PREFIX = "/api/v1"
SCHEMAS = "#/components/schemas/"

Auth = Literal["sigv4", "public", "github-hmac"]

#: What every signed call can be refused with, before its handler runs.
_SIGNED = (
    errors.AUTH_DUPLICATE_HEADER,
    errors.AUTH_MISSING,
    errors.AUTH_MALFORMED,
    errors.AUTH_EXPIRED,
    errors.AUTH_UNSIGNED_HEADER,
    errors.AUTH_UNTRUSTED_FORWARD,
    errors.AUTH_SIGNATURE_MISMATCH,
    errors.AUTH_PAYLOAD_MISMATCH,
    errors.AUTH_SCOPE_MISMATCH,
    errors.AUTH_TOKEN_MISMATCH,
    errors.AUTH_UNKNOWN_PRINCIPAL,
    errors.AUTH_SESSION_EXPIRED,
)
#: What reading a JSON body can be refused with (`pao.gateway.bodies.read_model`).
_JSON_BODY = (
    errors.BODY_TOO_LARGE,
    errors.MALFORMED_BODY,
    errors.UNSUPPORTED_MEDIA_TYPE,
    errors.INVALID_INPUT,
)
#: A call that reads or writes the database answers 503 while it is away.
_DATABASE = (errors.DEPENDENCY_UNAVAILABLE,)
_PAGING = (errors.INVALID_QUERY,)


@dataclass(frozen=True)
class Param:
    """A query parameter as the handler parses it (`pao.gateway.params`)."""

    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Operation:
    """One endpoint: method, path under /api/v1, what it takes, answers and can refuse."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    answer: type[BaseModel] | dict[str, Any]
    status: int = 200
    body: type[BaseModel] | dict[str, Any] | None = None
    body_required: bool = True
    query: tuple[Param, ...] = ()
    raises: tuple[ErrorCode, ...] = ()
    auth: Auth = "sigv4"
    idempotent: bool = False
    #: also answers `text/event-stream` (server-sent events)
    streams: bool = False
    extra_answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: answers carry `ETag` and `Cache-Control`; `If-None-Match` with the current tag: 304
    cached: bool = False


def _text(name: str, description: str) -> Param:
    return Param(name, {"type": "string", "maxLength": 200}, description)


def _int(name: str, default: int, low: int, high: int, description: str) -> Param:
    schema = {"type": "integer", "minimum": low, "maximum": high, "default": default}
    return Param(name, schema, description)


def _time(name: str, description: str) -> Param:
    return Param(name, {"type": "string", "format": "date-time"}, description)


def _object(summary: str, /, **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object the gateway builds itself: the named properties, perhaps more."""
    return {
        "type": "object",
        "description": summary,
        "required": list(properties),
        "properties": properties,
    }


_STRING: dict[str, Any] = {"type": "string"}
_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_INTEGER: dict[str, Any] = {"type": "integer"}
_ROW: dict[str, Any] = {"type": "object", "additionalProperties": True}
_ROWS: dict[str, Any] = {"type": "array", "items": _ROW}
_LINKS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}

_SUBMITTED = _object(
    "The request recorded; follow it at `links`.",
    request_id=_STRING,
    status=_STRING,
    item_id=_STRING,
    item_version=_STRING,
    links=_LINKS,
)
#: What an update or a decommission of a resource can answer besides success.
_RESOURCE_CHANGE = (
    *_JSON_BODY,
    errors.RESOURCE_NOT_FOUND,
    errors.ITEM_NOT_FOUND,
    errors.MODE_NOT_OFFERED,
    errors.RESOURCE_STATE_CONFLICT,
    errors.IDEMPOTENCY_KEY_REUSED,
    errors.CONCURRENCY_CONFLICT,
    *_DATABASE,
)
_CHANGE_SUBMITTED = _object(
    "The update or decommission request recorded; follow it at `links`.",
    request_id=_STRING,
    status=_STRING,
    kind={"type": "string", "enum": ["update", "decommission"]},
    resource_id=_STRING,
    links=_LINKS,
)
_DECIDED = _object(
    "The request after the decision, and the approval decided.",
    request_id=_STRING,
    status=_STRING,
    approval={"anyOf": [_ROW, {"type": "null"}]},
)
_REQUEST_PAGE = _object(
    "A page of the requests the caller may see; `total` counts every match.",
    total=_INTEGER,
    limit=_INTEGER,
    offset=_INTEGER,
    sort=_STRING,
    requests=_ROWS,
)
_RESOURCE_PAGE = _object(
    "A page of the resources the caller may see; `total` counts every match.",
    total=_INTEGER,
    limit=_INTEGER,
    offset=_INTEGER,
    resources=_ROWS,
)
_WHOAMI = _object(
    "The caller as the gateway verified them.",
    user=_STRING,
    teams={"type": "array", "items": _STRING},
    roles={"type": "array", "items": _STRING},
    access_key_id=_NULLABLE_STRING,
    name=_NULLABLE_STRING,
    email=_NULLABLE_STRING,
    session=_NULLABLE_STRING,
    principal_arn=_NULLABLE_STRING,
)
_ITEM = _object(
    "One catalog item's whole definition and its fulfilment modes as they stand.",
    catalog_version=_NULLABLE_STRING,
    item=_ROW,
    modes={"$ref": SCHEMAS + "ModeState"},
)
_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The item's form as a JSON Schema (2020-12).",
    "additionalProperties": True,
}
_LOGS = _object(
    "The request's log entries after `after`, in order. With `follow=true` the answer is "
    "`text/event-stream` instead: `event: log` per entry (id: its seq), then `event: end`.",
    request_id=_STRING,
    status=_STRING,
    entries=_ROWS,
)
_EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string"}}}
_VALIDATED = _object(
    "Whether the inputs pass the form and every action renders; the problems, or the actions "
    "rendered (secrets masked).",
    item_id=_STRING,
    item_version=_STRING,
    valid={"type": "boolean"},
)
_FORM = _object(
    "The form as a UI shows it: fields in order, which are visible and required so far.",
    item_id=_STRING,
    item_version=_STRING,
    title=_STRING,
    description=_STRING,
)
_EXPLAINED: dict[str, Any] = {
    "type": "object",
    "description": "Each phase of the variables engine for the template, or for every template "
    "of the action with its rendered spec.",
    "additionalProperties": True,
}
_RETRIED = _object(
    "The request runs its failed actions again.",
    request_id=_STRING,
    status=_STRING,
    retried={"type": "array", "items": _STRING},
)
_ABORTED = _object("The request is aborted.", request_id=_STRING, status=_STRING, reason=_STRING)
_ESCALATED = _object(
    "The request's new escalation level.",
    request_id=_STRING,
    level=_INTEGER,
    urgency=_STRING,
    reason=_STRING,
)
_ESCALATION = _object(
    "The escalation level and its history, oldest first.",
    request_id=_STRING,
    level=_INTEGER,
    escalated={"type": "boolean"},
    history=_ROWS,
)
_PLANS = _object(
    "The Terraform plans of the request's actions, sensitive values masked.",
    request_id=_STRING,
    plans=_ROWS,
)
_APPROVALS = _object("What waits for the caller's approval.", approvals=_ROWS)
_WEBHOOK_ANSWER: dict[str, Any] = {
    "description": 'A ping (`{"ok": true, "event": "ping"}`) or the catalog refresh a push '
    "to the catalog's branch caused.",
    "anyOf": [
        _object("A ping.", ok={"type": "boolean"}, event=_STRING),
        {"$ref": SCHEMAS + "RefreshResult"},
    ],
}
_CATALOG_TEXT = {
    "type": "string",
    "description": "A catalog item or bundle, as YAML or JSON text.",
}
_OPENAPI: dict[str, Any] = {"type": "object", "description": "This OpenAPI 3.1 document."}

#: The values the request service's queries accept (a unit test keeps them equal).
REQUEST_STATUSES = (
    "submitted",
    "in_progress",
    "awaiting_approval",
    "awaiting_manual",
    "completed",
    "failed",
    "aborted",
)
REQUEST_SORTS = ("created_at", "-created_at", "updated_at", "-updated_at", "status")
RESOURCE_STATES = (
    "provisioning",
    "active",
    "updating",
    "decommissioning",
    "decommissioned",
    "failed",
)

_REQUEST_ID = "request_id"
_RESOURCE_ID = "resource_id"
_ITEM_ID = "item_id"
_REQ = "/requests/{request_id}"
_AS_OF = _time(
    "as_of",
    "The request as it was at this time (ISO 8601; without a zone, UTC), rebuilt from its "
    "events; before it was submitted: PAO-REQ-001.",
)
_RES = "/resources/{resource_id}"
_STATE_CHANGE = (
    errors.REQUEST_NOT_FOUND,
    errors.REQUEST_STATE_CONFLICT,
    errors.CONCURRENCY_CONFLICT,
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/health",
        "getHealth",
        "Liveness: the process serves HTTP.",
        "health",
        Health,
        auth="public",
    ),
    Operation(
        "get",
        "/health/ready",
        "getReadiness",
        "Readiness: every dependency answers (200), else 503 naming the parts that are down; "
        "details only for a signed caller.",
        "health",
        Readiness,
        auth="public",
        extra_answers={
            503: {
                "description": "A dependency is down.",
                "content": {"application/json": {"schema": {"$ref": SCHEMAS + "Readiness"}}},
            }
        },
    ),
    Operation(
        "get",
        "/version",
        "getVersion",
        "The server's version.",
        "health",
        Version,
        auth="public",
    ),
    Operation(
        "get",
        "/openapi.json",
        "getOpenApi",
        "This document.",
        "health",
        _OPENAPI,
        auth="public",
    ),
    Operation("get", "/auth/whoami", "whoami", "The verified caller.", "auth", _WHOAMI),
    Operation(
        "get",
        "/auth/sign-in",
        "getSignIn",
        "What a sign-in proof must be signed for: the STS endpoint and region, the audience.",
        "auth",
        SignInInfo,
        auth="public",
    ),
    Operation(
        "post",
        "/auth/sign-in",
        "signIn",
        "Exchange an sts:GetCallerIdentity call signed with AWS credentials (not sent; its "
        "headers and body) for a PAO session key; the proof is the credential and works once.",
        "auth",
        SignInSession,
        status=201,
        body=SignInBody,
        auth="public",
        raises=(
            *_JSON_BODY,
            errors.AUTH_SIGNIN_MALFORMED,
            errors.AUTH_SIGNIN_EXPIRED,
            errors.AUTH_SIGNIN_REPLAYED,
            errors.AUTH_SIGNIN_REFUSED,
            errors.AUTH_UNKNOWN_PRINCIPAL,
            *_DATABASE,
        ),
    ),
    Operation(
        "post",
        "/portal/links",
        "makePortalLink",
        "A one-time link (valid for PAO_PORTAL_LINK_SECONDS) that signs a browser in to the "
        "web portal as the caller; opening it sets the portal's session cookie. Needs a signed "
        "call: a portal session cannot make links.",
        "auth",
        PortalLink,
        status=201,
        raises=(
            errors.BODY_TOO_LARGE,
            errors.MALFORMED_BODY,
            errors.AUTH_PORTAL_LINK_SESSION,
            errors.AUTH_CSRF_MISSING,
            *_DATABASE,
        ),
    ),
    Operation(
        "get",
        "/catalog",
        "listCatalog",
        "Catalog items filtered by category, owner, tag and free text, a page at a time.",
        "catalog",
        CatalogPage,
        query=(
            _text("category", "Only items of this category."),
            _text("owner", "Only items this team owns."),
            _text("tag", "Only items with this tag."),
            _text("q", "Free text matched against names and descriptions."),
            _int("limit", 50, 1, 200, "Page size."),
            _int("offset", 0, 0, 1_000_000, "Items to skip."),
        ),
        raises=_PAGING,
        cached=True,
    ),
    Operation(
        "get",
        "/catalog/items/{item_id}",
        "getCatalogItem",
        "One item's whole definition and the fulfilment mode new requests of it run in.",
        "catalog",
        _ITEM,
        raises=(errors.ITEM_NOT_FOUND,),
        cached=True,
    ),
    Operation(
        "get",
        "/catalog/items/{item_id}/schema",
        "getCatalogItemSchema",
        "The item's form as a JSON Schema (2020-12).",
        "catalog",
        _FORM_SCHEMA,
        raises=(errors.ITEM_NOT_FOUND,),
        cached=True,
    ),
    Operation(
        "get",
        "/catalog/items/{item_id}/versions",
        "listCatalogItemVersions",
        "Every definition of the item the catalog published, oldest first.",
        "catalog",
        ItemVersions,
        raises=(errors.ITEM_NOT_FOUND, *_DATABASE),
    ),
    Operation(
        "get",
        "/catalog/items/{item_id}/versions/{version}",
        "getCatalogItemVersion",
        "The item as the catalog last published it with that version.",
        "catalog",
        ItemVersionDefinition,
        raises=(errors.ITEM_NOT_FOUND, *_DATABASE),
    ),
    Operation(
        "post",
        "/catalog/items/{item_id}/mode",
        "switchCatalogItemMode",
        "Run new requests of the item in another of its modes (admins and the owning team).",
        "catalog",
        ModeState,
        body=ModeSwitchBody,
        raises=(
            *_JSON_BODY,
            errors.ITEM_NOT_FOUND,
            errors.FORBIDDEN,
            errors.MODE_NOT_OFFERED,
            errors.CONCURRENCY_CONFLICT,
            *_DATABASE,
        ),
    ),
    Operation(
        "post",
        "/catalog/refresh",
        "refreshCatalog",
        "Reload the catalog from its source (admin or platform role); 422 with every problem.",
        "catalog",
        RefreshResult,
        raises=(
            errors.BODY_TOO_LARGE,
            errors.FORBIDDEN,
            errors.CATALOG_INVALID,
            errors.CATALOG_SOURCE_UNAVAILABLE,
            errors.CONCURRENCY_CONFLICT,
            *_DATABASE,
        ),
    ),
    Operation(
        "post",
        "/validate/catalog-item",
        "validateCatalogItem",
        "Every problem of a YAML or JSON item (or bundle), with JSON pointer and line.",
        "validation",
        ValidationResult,
        body=_CATALOG_TEXT,
        query=(Param("filename", {"type": "string"}, "The file's name, quoted in problems."),),
        raises=(errors.BODY_TOO_LARGE, errors.MALFORMED_BODY, errors.UNSUPPORTED_MEDIA_TYPE),
    ),
    Operation(
        "post",
        "/validate/request",
        "validateRequest",
        "Inputs against the item's form, then a dry render of every action.",
        "validation",
        _VALIDATED,
        body=ValidateRequestBody,
        raises=(*_JSON_BODY, errors.ITEM_NOT_FOUND, errors.MODE_NOT_OFFERED),
    ),
    Operation(
        "post",
        "/preview/form",
        "previewForm",
        "The form as a UI shows it, given the inputs entered so far.",
        "validation",
        _FORM,
        body=PreviewFormBody,
        raises=(*_JSON_BODY, errors.ITEM_NOT_FOUND),
    ),
    Operation(
        "post",
        "/test/variables",
        "testVariables",
        "Each phase of the variables engine for a template, or every template of an action.",
        "validation",
        _EXPLAINED,
        body=TestVariablesBody,
        raises=(*_JSON_BODY, errors.ITEM_NOT_FOUND, errors.NOT_FOUND),
    ),
    Operation(
        "post",
        "/requests",
        "submitRequest",
        "Validate and record a request; a repeat with the same Idempotency-Key answers the same.",
        "requests",
        _SUBMITTED,
        status=202,
        body=SubmitBody,
        idempotent=True,
        raises=(
            *_JSON_BODY,
            errors.ITEM_NOT_FOUND,
            errors.MODE_NOT_OFFERED,
            errors.IDEMPOTENCY_KEY_REUSED,
            errors.CONCURRENCY_CONFLICT,
            *_DATABASE,
        ),
    ),
    Operation(
        "get",
        "/requests",
        "listRequests",
        "The requests the caller may see, filtered, sorted and paged.",
        "requests",
        _REQUEST_PAGE,
        query=(
            Param(
                "status",
                {"type": "string", "enum": list(REQUEST_STATUSES)},
                "Only requests in this status.",
            ),
            _text("item_id", "Only requests of this catalog item."),
            _text("requester", "Only this requester's requests."),
            _text("team", "Only requests the team owns."),
            _time("created_after", "Created at or after (ISO 8601)."),
            _time("created_before", "Created before (ISO 8601)."),
            Param(
                "sort",
                {"type": "string", "enum": list(REQUEST_SORTS), "default": "-created_at"},
                "The order; `-` for descending.",
            ),
            _int("limit", 50, 1, 500, "Page size."),
            _int("offset", 0, 0, 10_000_000, "Requests to skip."),
        ),
        raises=(*_PAGING, *_DATABASE),
    ),
    Operation(
        "get",
        _REQ,
        "getRequest",
        "A request: what was asked, by whom, its actions with their outputs, its escalations; "
        "with `as_of`, as it was at that time, rebuilt from its events.",
        "requests",
        _ROW,
        query=(_AS_OF,),
        raises=(errors.REQUEST_NOT_FOUND, errors.INVALID_QUERY, *_DATABASE),
        cached=True,
    ),
    Operation(
        "get",
        _REQ + "/history",
        "getRequestHistory",
        "Every event of the request, oldest first: who, when, the event and the fields it "
        "changed (before and after).",
        "requests",
        HistoryPage,
        query=(
            _AS_OF,
            _int("limit", 100, 1, 500, "Page size."),
            _int("offset", 0, 0, 1_000_000, "Events to skip."),
        ),
        raises=(errors.REQUEST_NOT_FOUND, errors.INVALID_QUERY, *_DATABASE),
    ),
    Operation(
        "get",
        _REQ + "/status",
        "getRequestStatus",
        "Compact status with per-action progress.",
        "requests",
        _ROW,
        raises=(errors.REQUEST_NOT_FOUND, *_DATABASE),
        cached=True,
    ),
    Operation(
        "get",
        _REQ + "/logs",
        "getRequestLogs",
        "Log entries in order; `follow=true` streams new ones as server-sent events.",
        "requests",
        _LOGS,
        streams=True,
        query=(
            _int("after", 0, 0, 1_000_000, "Only entries with a greater seq."),
            Param(
                "follow",
                {"type": "boolean", "default": False},
                "`true` (or `1`, `yes`) streams entries as server-sent events until the request "
                "ends.",
            ),
        ),
        raises=(
            errors.REQUEST_NOT_FOUND,
            errors.INVALID_QUERY,
            errors.TOO_MANY_LOG_FOLLOWS,
            *_DATABASE,
        ),
    ),
    Operation(
        "get",
        _REQ + "/escalation",
        "getRequestEscalation",
        "The escalation level and its history.",
        "requests",
        _ESCALATION,
        raises=(errors.REQUEST_NOT_FOUND, *_DATABASE),
    ),
    Operation(
        "get",
        _REQ + "/plan",
        "getRequestPlan",
        "The Terraform plans of the request's actions, sensitive values masked.",
        "requests",
        _PLANS,
        raises=(errors.REQUEST_NOT_FOUND, errors.NO_PLAN, *_DATABASE),
    ),
    Operation(
        "post",
        _REQ + "/retry",
        "retryRequest",
        "Re-run the failed actions of a failed request.",
        "requests",
        _RETRIED,
        status=202,
        raises=(errors.BODY_TOO_LARGE, *_STATE_CHANGE, errors.REQUEST_TOO_SOON, *_DATABASE),
    ),
    Operation(
        "post",
        _REQ + "/abort",
        "abortRequest",
        "Stop a request; its open tickets are told.",
        "requests",
        _ABORTED,
        status=202,
        body=AbortBody,
        body_required=False,
        raises=(*_JSON_BODY, *_STATE_CHANGE, *_DATABASE),
    ),
    Operation(
        "post",
        _REQ + "/escalate",
        "escalateRequest",
        "Escalate to the owning team: their ticket's priority goes up and they are told.",
        "requests",
        _ESCALATED,
        status=202,
        body=EscalateBody,
        raises=(*_JSON_BODY, *_STATE_CHANGE, errors.REQUEST_TOO_SOON, *_DATABASE),
    ),
    Operation(
        "post",
        _REQ + "/approve",
        "approveRequest",
        "Approve what the request waits for (an approver only, never the requester).",
        "requests",
        _DECIDED,
        status=202,
        body=DecisionBody,
        body_required=False,
        raises=(*_JSON_BODY, *_STATE_CHANGE, errors.NOT_AN_APPROVER, *_DATABASE),
    ),
    Operation(
        "post",
        _REQ + "/reject",
        "rejectRequest",
        "Reject what the request waits for, with a comment; the request fails with it.",
        "requests",
        _DECIDED,
        status=202,
        body=DecisionBody,
        raises=(*_JSON_BODY, *_STATE_CHANGE, errors.NOT_AN_APPROVER, *_DATABASE),
    ),
    Operation(
        "get",
        "/approvals",
        "listApprovals",
        "What waits for the caller's approval.",
        "requests",
        _APPROVALS,
        raises=_DATABASE,
    ),
    Operation(
        "get",
        "/resources",
        "listResources",
        "The resources the caller may see, filtered and paged.",
        "resources",
        _RESOURCE_PAGE,
        query=(
            _text("item_id", "Only resources of this catalog item."),
            _text("team", "Only resources the team owns."),
            _text("owner", "Only this user's resources."),
            Param(
                "state",
                {"type": "string", "enum": list(RESOURCE_STATES)},
                "Only resources in this state.",
            ),
            _text("environment", "Only resources in this environment."),
            _int("limit", 50, 1, 500, "Page size."),
            _int("offset", 0, 0, 10_000_000, "Resources to skip."),
        ),
        raises=(*_PAGING, *_DATABASE),
    ),
    Operation(
        "get",
        _RES,
        "getResource",
        "A resource, its inputs and outputs (secrets masked), and the requests that made and "
        "changed it.",
        "resources",
        _ROW,
        raises=(errors.RESOURCE_NOT_FOUND, *_DATABASE),
        cached=True,
    ),
    Operation(
        "post",
        _RES + "/update",
        "updateResource",
        "Change the resource to new inputs: a request of kind update.",
        "resources",
        _CHANGE_SUBMITTED,
        status=202,
        body=UpdateResourceBody,
        idempotent=True,
        raises=_RESOURCE_CHANGE,
    ),
    Operation(
        "post",
        _RES + "/decommission",
        "decommissionResource",
        "Remove the resource: a request of kind decommission running the item's teardown.",
        "resources",
        _CHANGE_SUBMITTED,
        status=202,
        body=DecommissionBody,
        idempotent=True,
        raises=_RESOURCE_CHANGE,
    ),
    Operation(
        "get",
        "/stats",
        "getPlatformStats",
        "The platform's figures (admin or platform role): throughput, latencies, the fulfilment "
        "queue, work parked behind open breakers, relay, projector and consumer lags.",
        "platform",
        PlatformStats,
        raises=(errors.FORBIDDEN, *_DATABASE),
    ),
    Operation(
        "get",
        "/audit",
        "listAudit",
        "Every command (POST, PUT, PATCH, DELETE) accepted or refused, oldest first: who, what, "
        "the answer, when, from where (admin role).",
        "audit",
        AuditPage,
        query=(
            _text("user", "Only commands of this user."),
            _text("item", "Only commands on this catalog item (its submits, changes to it)."),
            _text("target", "Only commands acting on this request, resource or catalog item id."),
            _time("since", "At or after (ISO 8601; without a zone, UTC)."),
            _time("until", "Before (ISO 8601; without a zone, UTC)."),
            _int("limit", 100, 1, 1000, "Page size."),
            _int("offset", 0, 0, 100_000_000, "Records to skip."),
        ),
        raises=(errors.FORBIDDEN, *_PAGING, *_DATABASE),
    ),
    Operation(
        "post",
        "/webhooks/github",
        "githubWebhook",
        "GitHub's webhook: ping answers 200, a push to the catalog's branch refreshes the "
        "catalog, anything else is ignored (202).",
        "webhooks",
        _WEBHOOK_ANSWER,
        body={"type": "object", "description": "GitHub's event payload."},
        auth="github-hmac",
        raises=(
            errors.BODY_TOO_LARGE,
            errors.WEBHOOK_SIGNATURE_INVALID,
            errors.WEBHOOK_NOT_CONFIGURED,
            errors.MALFORMED_BODY,
            errors.CATALOG_INVALID,
            errors.CATALOG_SOURCE_UNAVAILABLE,
            errors.CONCURRENCY_CONFLICT,
            *_DATABASE,
        ),
        extra_answers={
            202: {
                "description": "An event other than ping or a push to the catalog's branch, "
                "ignored.",
                "content": {"application/json": {"schema": _object("Why.", ignored=_STRING)}},
            }
        },
    ),
)

#: Paths answered without a SigV4 signature (the webhook checks GitHub's HMAC instead).
PUBLIC_PATHS = frozenset(PREFIX + o.path for o in OPERATIONS if o.auth == "public")
SELF_AUTHENTICATED_PATHS = frozenset(PREFIX + o.path for o in OPERATIONS if o.auth == "github-hmac")

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "sigv4": [{"sigv4": []}],
    "public": [],
    "github-hmac": [{"githubHmac": []}],
}
_PATH_PARAMS = {
    _ITEM_ID: "The catalog item's id.",
    _REQUEST_ID: "The request's id.",
    _RESOURCE_ID: "The resource's id.",
    "version": "A version the catalog published the item with, e.g. 1.2.0.",
}

_SIGV4 = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": (
        "AWS Signature Version 4 (`AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/"
        "execute-api/aws4_request, SignedHeaders=..., Signature=...`), with `X-Amz-Date` (and "
        "`X-Amz-Security-Token` for temporary credentials) signed too. Sign for service "
        "`execute-api` and the gateway's region (PAO_REGION, default us-east-1); the body's "
        "SHA-256 is part of the signature, and the request time must be within "
        "PAO_CLOCK_SKEW_SECONDS of the server's. The key is a static one from the key store, "
        "or a session key from `POST /api/v1/auth/sign-in` (AWS credentials, checked by STS). "
        "With PAO_AUTH_MODE=apigateway, AWS API Gateway verifies the signature (IAM auth) and "
        "forwards the caller's identity. botocore's SigV4Auth, or `devctl`, signs requests."
    ),
}
_HMAC = {
    "type": "apiKey",
    "in": "header",
    "name": "X-Hub-Signature-256",
    "description": "GitHub's `sha256=<hex>` HMAC of the body with the webhook secret "
    "(PAO_GITHUB_WEBHOOK_SECRET or PAO_GITHUB_WEBHOOK_SECRET_PATH).",
}
_HEADERS: dict[str, Any] = {
    "X-Correlation-ID": {
        "description": "The call's correlation id: the one sent, if it was 1-128 of "
        "`A-Za-z0-9._:-`, else a new UUID. Quote it when reporting a problem.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again (429, and 503 while the database "
        "is away).",
        "schema": {"type": "integer"},
    },
    "Location": {"description": "The request's URL.", "schema": {"type": "string"}},
    "ETag": {
        "description": "The answer's entity tag (strong): send it back as `If-None-Match` to "
        "be answered 304 while it is current (docs/api.md, Caching).",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`private, no-cache`: a client may keep the answer, and revalidates it "
        "(`If-None-Match`) before each use.",
        "schema": {"type": "string", "const": "private, no-cache"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when the answer repeats an earlier call with the same "
        "Idempotency-Key.",
        "schema": {"type": "string", "const": "true"},
    },
}
_PARAMETERS: dict[str, Any] = {
    "CorrelationId": {
        "name": "X-Correlation-ID",
        "in": "header",
        "required": False,
        "description": "Your id for the call (1-128 of `A-Za-z0-9._:-`); echoed back, logged, "
        "and carried by the events the call causes.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Remembered per requester: the same key with the same body answers the "
        "first request again (`Idempotent-Replayed: true`); with another body it is refused "
        "(PAO-REQ-003).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "IfNoneMatch": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "The `ETag`(s) of the copy you hold (or `*`): 304 Not Modified, no body, "
        "while one of them is current.",
        "schema": {"type": "string"},
    },
}


def _package_version() -> str:
    try:
        return version("pao-contracts")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _schema(source: type[BaseModel] | dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A reference to a model (its schema under components/schemas), or a schema written here."""
    if isinstance(source, dict):
        return source
    schema = source.model_json_schema(ref_template=SCHEMAS + "{model}")
    defs.update(schema.pop("$defs", {}))
    defs[source.__name__] = schema
    return {"$ref": SCHEMAS + source.__name__}


def _error_answers(op: Operation) -> dict[str, Any]:
    """The error envelope under each status the operation's error codes answer with."""
    raised = (*(_SIGNED if op.auth == "sigv4" else ()), *op.raises, errors.INTERNAL)
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in raised:
        if code.code not in by_status[code.http_status]:
            by_status[code.http_status].append(code.code)
    answers: dict[str, Any] = {}
    for status in sorted(by_status):
        titles = "; ".join(f"`{c}` {errors.REGISTRY[c].title}" for c in by_status[status])
        headers = {"X-Correlation-ID": {"$ref": "#/components/headers/X-Correlation-ID"}}
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        answers[str(status)] = {
            "description": titles,
            "headers": headers,
            "content": {"application/json": {"schema": {"$ref": SCHEMAS + "ErrorResponse"}}},
        }
    return answers


def _operation(op: Operation, defs: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": _PATH_PARAMS[name],
            "schema": {"type": "string"},
        }
        for name in _PATH_PARAMS
        if "{" + name + "}" in op.path
    ]
    parameters += [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": p.description,
            "schema": p.schema,
        }
        for p in op.query
    ]
    parameters.append({"$ref": "#/components/parameters/CorrelationId"})
    if op.idempotent:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    if op.cached:
        parameters.append({"$ref": "#/components/parameters/IfNoneMatch"})
    headers: dict[str, Any] = {
        "X-Correlation-ID": {"$ref": "#/components/headers/X-Correlation-ID"}
    }
    if op.idempotent:
        headers["Location"] = {"$ref": "#/components/headers/Location"}
        headers["Idempotent-Replayed"] = {"$ref": "#/components/headers/Idempotent-Replayed"}
    if op.cached:
        headers["ETag"] = {"$ref": "#/components/headers/ETag"}
        headers["Cache-Control"] = {"$ref": "#/components/headers/Cache-Control"}
    content: dict[str, Any] = {"application/json": {"schema": _schema(op.answer, defs)}}
    if op.streams:
        content.update(_EVENT_STREAM)
    answers: dict[str, Any] = {
        str(op.status): {
            "description": op.summary.split(";")[0].rstrip("."),
            "headers": headers,
            "content": content,
        }
    }
    for status, answer in op.extra_answers.items():
        answers[str(status)] = {**answer, "headers": dict(headers)}
    if op.cached:
        answers["304"] = {
            "description": "Not modified: `If-None-Match` named the current `ETag`; no body. "
            "The caller is authorised as for a 200 first.",
            "headers": dict(headers),
        }
    for status, answer in _error_answers(op).items():
        answers.setdefault(status, answer)
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": dict(sorted(answers.items())),
        "security": _SECURITY[op.auth],
    }
    if op.body is not None:
        media = "application/yaml" if op.body is _CATALOG_TEXT else "application/json"
        body_content = {media: {"schema": _schema(op.body, defs)}}
        if media != "application/json":
            body_content["application/json"] = {"schema": _CATALOG_TEXT}
        operation["requestBody"] = {"required": op.body_required, "content": body_content}
    return operation


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document describing every endpoint under /api/v1, as a dict."""
    defs: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(PREFIX + op.path, {})[op.method] = _operation(op, defs)
    _schema(ErrorResponse, defs)
    public = ", ".join(f"`{p}`" for p in sorted(PUBLIC_PATHS))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "PAO REST API",
            "version": _package_version(),
            "description": (
                "The REST API of the Platform Automation Orchestrator. JSON in and out; every "
                "answer carries `X-Correlation-ID`, and every failure is the error envelope "
                '`{"error": {"code", "message", "details", "suggestion", '
                '"correlation_id"}}` with a `PAO-<AREA>-<NNN>` code (docs/api.md lists them). '
                f"Every call is signed with AWS SigV4 except {public} (public) and the GitHub "
                "webhook (GitHub's HMAC)."
            ),
        },
        "servers": [
            {
                "url": "http://127.0.0.1:8080",
                "description": "The gateway; `pao up` writes its address to .pao/stack.json as "
                "`gateway`.",
            }
        ],
        "security": [{"sigv4": []}],
        "tags": [
            {"name": name}
            for name in (
                "health",
                "auth",
                "catalog",
                "validation",
                "requests",
                "resources",
                "platform",
                "audit",
                "webhooks",
            )
        ],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(defs.items())),
            "parameters": _PARAMETERS,
            "headers": _HEADERS,
            "securitySchemes": {"sigv4": _SIGV4, "githubHmac": _HMAC},
        },
    }


def render() -> str:
    """The document as the JSON text committed in docs/openapi.json."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201
