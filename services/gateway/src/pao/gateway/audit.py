"""The audit of commands: every call that could change something, accepted or refused, and
`GET /api/v1/audit` (admins only) to read it.

The error-and-correlation middleware records each call it answers whose method changes things
(POST, PUT, PATCH, DELETE) as one row of `gateway_audit`, an append-only table the gateway owns:
who (the verified user and principal, or the access key a refused call claimed), what (method,
route template, the id acted on), the answer (status, error code), when, from where, and the
correlation id that ties the row to the events the command appended. Reads (GET) change nothing
and are not recorded, nor are the POSTs that only check or preview (`_CHECKS_ONLY`).

When the row is written is the choice that matters. An accepted command's row is inserted before
its answer goes out: a caller told "done" can count on the audit saying so, at the price of one
single-row INSERT on an acknowledged command. A refused call changed nothing, so its answer goes
out first and the row follows, off the caller's path (a flood of bad signatures is not slowed by
the audit, nor the audit by it). Should the insert fail (the database away), the record goes to
the log instead, once, as an error: the access log line carries it too.
"""

from __future__ import annotations

import re
from dataclasses import astuple, dataclass

import structlog
from aiohttp import web

from pao.contracts import errors
from pao.contracts.audit import AuditPage, AuditRecord
from pao.contracts.errors import PaoError
from pao.gateway.metrics import route_of
from pao.gateway.params import int_param, text_param
from pao.gateway.requests import aware_time_param
from pao.gateway.resources import AUDITED_ITEM, CORRELATION_ID, IDENTITY, POOL, read_pool
from pao.shared.keystore import Identity

log = structlog.get_logger("pao.gateway.audit")
routes = web.RouteTableDef()

#: Methods whose calls are commands, and audited.
AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: POSTs that check or preview and change nothing (and a form preview is sent at every keystroke).
_CHECKS_ONLY = frozenset(
    {
        "/api/v1/validate/catalog-item",
        "/api/v1/validate/request",
        "/api/v1/preview/form",
        "/api/v1/test/variables",
    }
)
#: Path parameters naming what a command acts on, in the order they are looked for.
_TARGETS = ("request_id", "resource_id", "item_id")
_CLAIMED_KEY = re.compile(r"Credential=([A-Za-z0-9]{1,128})/")
_LONGEST = 300

_INSERT = """
INSERT INTO gateway_audit (user_id, principal, access_key_id, method, route, target_id, item_id,
    status, error_code, remote_addr, correlation_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""


@dataclass(frozen=True, slots=True)
class Command:
    """One audited call, in the column order of `_INSERT`."""

    user: str | None
    principal: str | None
    access_key_id: str | None
    method: str
    route: str
    target_id: str | None
    item_id: str | None
    status: int
    error_code: str | None
    remote_addr: str | None
    correlation_id: str


def audited(request: web.Request) -> bool:
    """Whether the call is a command the audit records."""
    return request.method in AUDITED_METHODS and request.path not in _CHECKS_ONLY


def command_of(
    request: web.Request, response: web.StreamResponse, refused: PaoError | None
) -> Command:
    """What the audit records of a call and its answer."""
    identity: Identity | None = request.get(IDENTITY)
    route = route_of(request)
    target = next((request.match_info[k] for k in _TARGETS if k in request.match_info), None)
    if target is None and response.status < 400:
        # A submit names the request it made only in its answer.
        target = response.headers.get("Location", "").rstrip("/").rpartition("/")[2] or None
    item = request.match_info.get("item_id") or request.get(AUDITED_ITEM)
    claimed = _CLAIMED_KEY.search(request.headers.get("Authorization", ""))
    return Command(
        user=identity.user if identity else None,
        principal=identity.principal_arn if identity else None,
        access_key_id=identity.access_key_id
        if identity
        else (claimed.group(1) if claimed else None),
        method=request.method,
        route=_bounded(request.path if route == "unmatched" else route),
        target_id=_bounded(target) if target else None,
        item_id=_bounded(item) if item else None,
        status=response.status,
        error_code=refused.code.code if refused else None,
        remote_addr=request.remote,
        correlation_id=request[CORRELATION_ID],
    )


async def record(
    request: web.Request, response: web.StreamResponse, refused: PaoError | None
) -> None:
    """Record an audited call: an accepted one before its answer goes out, a refused one after
    (the module docstring says why)."""
    command = command_of(request, response, refused)
    if response.status >= 400 and not response.prepared:
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the caller went away; the refusal is recorded all the same
    try:
        await request.app[POOL].execute(_INSERT, *astuple(command))
    except Exception as exc:  # noqa: BLE001 - a done command stays done; its record is logged
        log.error("audit record not written", error=str(exc), **_fields(command))


def _bounded(text: str) -> str:
    """A caller's text as a column holds it: bounded, and without NUL (PostgreSQL text has none)."""
    return text[:_LONGEST].replace("\x00", "")


def _fields(command: Command) -> dict[str, object]:
    return {
        name: getattr(command, name)
        for name in Command.__dataclass_fields__
        if name != "correlation_id"  # bound to the log context already
    }


@routes.get("/api/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    """Every command accepted or refused, oldest first, filtered and paged (admins only)."""
    identity: Identity = request[IDENTITY]
    if not identity.is_admin:
        raise PaoError(
            errors.FORBIDDEN, f"{identity.user} may not read the audit: it needs the admin role"
        )
    clauses: list[str] = []
    args: list[object] = []
    for column, value in (
        ("user_id =", text_param(request, "user")),
        ("target_id =", text_param(request, "target")),
        ("item_id =", text_param(request, "item")),
        ("at >=", aware_time_param(request, "since")),
        ("at <", aware_time_param(request, "until")),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} ${len(args)}")
    limit = int_param(request, "limit", 100, low=1, high=1000)
    offset = int_param(request, "offset", 0, low=0, high=100_000_000)
    condition = " AND ".join(clauses) or "TRUE"
    pool = read_pool(request.app)
    total = await pool.fetchval(f"SELECT count(*) FROM gateway_audit WHERE {condition}", *args)
    rows = await pool.fetch(
        "SELECT audit_id, at, user_id AS user, principal, access_key_id, method, route, "
        "target_id, item_id, status, error_code, remote_addr, correlation_id FROM gateway_audit "
        f"WHERE {condition} ORDER BY audit_id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args,
        limit,
        offset,
    )
    page = AuditPage(
        total=total,
        limit=limit,
        offset=offset,
        records=[AuditRecord.model_validate(dict(r)) for r in rows],
    )
    return web.json_response(page.model_dump(mode="json"))
