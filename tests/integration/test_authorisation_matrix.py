"""Who may read and change which request and resource: every cell of the authorisation matrix.

Five people call every endpoint that reads or changes a request or a resource: the developer who
submitted (`requester`), a developer of another team (`other`), a member of the item's owning team
who did not submit it (`owner`), a platform operator (`platform`) and an admin. Each cell asserts
the exact answer: the status and, for a refusal, the error code; after a refusal, that the
request's and the resource's streams are at the versions they had and that no event at all carries
the refused call's correlation id (nothing was decided, no command was dispatched).

The gateway, relay, projector and request service run for real, on their own database; the
item is the repository's `postgresql-standard` (owned by team-data, which also approves its
production plans). Fulfilment does not run: the test plays its part by appending fulfilment's
reports (`ExecutionStarted`, `ExecutionPlanned`, `ExecutionSucceeded`) to `fulfillment-<id>`
streams through the real EventStore, and the real request service and projector take it from
there (a plan waiting for approval, a completed request with an active resource). Cells whose
success changes state run against objects made for them alone, in `staging` or `prod`; the list
cells look at the shared scene only (requests made before the scene was complete, resources in
`dev`), so their answers do not depend on the order the cells run in.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from botocore.credentials import ReadOnlyCredentials
from structlog.testing import capture_logs

from pao.contracts import events as ev
from pao.devctl.client import Target, sign
from pao.request.aggregate import stream_of
from pao.request.resource import stream_of as resource_stream_of
from pao.shared.eventstore import ANY_VERSION, EventStore
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, fresh_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request")
ITEM = "postgresql-standard"

#: The callers, in the order of the matrix's columns: (user, teams, roles).
PEOPLE = {
    "requester": ("rhea", ("team-payments",), ()),
    "other": ("oscar", ("team-growth",), ()),
    "owner": ("tara", ("team-data",), ()),
    "platform": ("pia", ("team-platform",), ("platform",)),
    "admin": ("ada", (), ("admin",)),
}
CALLERS = tuple(PEOPLE)

OK, ACCEPTED = "200", "202"
HIDDEN_REQ = "404 PAO-REQ-001"  # answered as if there were no such request
HIDDEN_RES = "404 PAO-RES-001"  # answered as if there were no such resource
DENIED = "403 PAO-REQ-004"  # not an approver of this request
CONFLICT = "409 PAO-REQ-002"  # the request waits for no approval

# fmt: off
#: endpoint -> the answer to (requester, other, owner, platform, admin). `{request}` is
#: /requests/<id>, `{resource}` /resources/<id>. A request or resource the caller may not see is
#: answered as one that does not exist; approvals are decided by the approvers the item names
#: (team-data), never by the requester, and not by an admin who is not named. Reads, approve and
#: reject act on a request whose Terraform plan waits for approval ("ended": on the rejected
#: one, which waits for nothing); retry on a failed request; abort and escalate on one in
#: progress; update and decommission on an active resource.
MATRIX: dict[str, tuple[str, str, str, str, str]] = {
    #                                  requester  other       owner     platform    admin
    "GET {request}":                  (OK,       HIDDEN_REQ, OK,       HIDDEN_REQ, OK),
    "GET {request}/status":           (OK,       HIDDEN_REQ, OK,       HIDDEN_REQ, OK),
    "GET {request}/logs":             (OK,       HIDDEN_REQ, OK,       HIDDEN_REQ, OK),
    "GET {request}/escalation":       (OK,       HIDDEN_REQ, OK,       HIDDEN_REQ, OK),
    "GET {request}/plan":             (OK,       HIDDEN_REQ, OK,       HIDDEN_REQ, OK),
    "POST {request}/retry":           (ACCEPTED, HIDDEN_REQ, ACCEPTED, HIDDEN_REQ, ACCEPTED),
    "POST {request}/abort":           (ACCEPTED, HIDDEN_REQ, ACCEPTED, HIDDEN_REQ, ACCEPTED),
    "POST {request}/escalate":        (ACCEPTED, HIDDEN_REQ, ACCEPTED, HIDDEN_REQ, ACCEPTED),
    "POST {request}/approve":         (DENIED,   HIDDEN_REQ, ACCEPTED, HIDDEN_REQ, DENIED),
    "POST {request}/reject":          (DENIED,   HIDDEN_REQ, ACCEPTED, HIDDEN_REQ, DENIED),
    "POST {request}/approve, ended":  (CONFLICT, HIDDEN_REQ, CONFLICT, HIDDEN_REQ, CONFLICT),
    "POST {request}/reject, ended":   (CONFLICT, HIDDEN_REQ, CONFLICT, HIDDEN_REQ, CONFLICT),
    "GET {resource}":                 (OK,       HIDDEN_RES, OK,       HIDDEN_RES, OK),
    "POST {resource}/update":         (ACCEPTED, HIDDEN_RES, ACCEPTED, HIDDEN_RES, ACCEPTED),
    "POST {resource}/decommission":   (ACCEPTED, HIDDEN_RES, ACCEPTED, HIDDEN_RES, ACCEPTED),
}

#: The scene every list is asked about. `pending` waits for approval (prod), `running` is in
#: progress, `failed` was rejected (prod), `finished` completed (its resource is active); the
#: requester made those four of team-data's item. The other developer made `theirs` of the same
#: item and `security` of team-security's iam-role, both in dev and in progress.
#: list -> the scene objects each caller sees, for (requester, other, owner, platform, admin).
LISTS: dict[str, tuple[set[str], set[str], set[str], set[str], set[str]]] = {
    "GET requests": (
        {"pending", "running", "failed", "finished"},
        {"theirs", "security"},
        {"pending", "running", "failed", "finished", "theirs"},
        set(),
        {"pending", "running", "failed", "finished", "theirs", "security"},
    ),
    "GET resources?environment=dev": (
        {"running", "finished"},
        {"theirs", "security"},
        {"running", "finished", "theirs"},
        set(),
        {"running", "finished", "theirs", "security"},
    ),
    "GET approvals": (set(), set(), {"pending"}, set(), set()),
}
# fmt: on

#: What each endpoint acts on, and the body it is sent.
TARGETS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "GET {request}": ("pending", None),
    "GET {request}/status": ("pending", None),
    "GET {request}/logs": ("pending", None),
    "GET {request}/escalation": ("pending", None),
    "GET {request}/plan": ("pending", None),
    "POST {request}/retry": ("failed", None),
    "POST {request}/abort": ("running", {"reason": "not needed after all"}),
    "POST {request}/escalate": ("running", {"reason": "blocks a release", "urgency": "high"}),
    "POST {request}/approve": ("pending", {"comment": "fine by the data team"}),
    "POST {request}/reject": ("pending", {"comment": "use the shared database"}),
    "POST {request}/approve, ended": ("failed", {"comment": "fine"}),
    "POST {request}/reject, ended": ("failed", {"comment": "no"}),
    "GET {resource}": ("finished", None),
    "POST {resource}/update": ("finished", {}),  # inputs: the resource's, with a new limit
    "POST {resource}/decommission": ("finished", {"reason": "the service is gone"}),
}

CELLS = [
    pytest.param(endpoint, caller, expected, id=f"{endpoint} as {caller}")
    for endpoint, answers in MATRIX.items()
    for caller, expected in zip(CALLERS, answers, strict=True)
]
LIST_CELLS = [
    pytest.param(endpoint, caller, expected, id=f"{endpoint} as {caller}")
    for endpoint, answers in LISTS.items()
    for caller, expected in zip(CALLERS, answers, strict=True)
]


def _key(caller: str) -> tuple[str, str]:
    return f"PAOMATRIX{caller.upper():0<11}"[:20], f"secret-of-{caller}"


@pytest.fixture(scope="module")
def people() -> KeyStore:
    entries = []
    for caller, (user, teams, roles) in PEOPLE.items():
        key_id, secret = _key(caller)
        entries.append(
            KeyEntry(
                access_key_id=key_id,
                secret_access_key=secret,
                user=user,
                teams=teams,
                roles=roles,
                name=user.title(),
                email=f"{user}@example.com",
            )
        )
    return KeyStore(entries)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    people: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with fresh_stack(
        postgres_server,
        settings,
        people,
        services=SERVICES,
        data_dir=tmp_path_factory.mktemp("matrix"),
    ) as running:
        yield running


async def call(
    stack: Stack, caller: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    """One signed call as `caller`; the whole answer."""
    key_id, secret = _key(caller)
    target = Target(stack.url, "us-east-1", ReadOnlyCredentials(key_id, secret, None))
    url = f"{stack.url}/api/v1/{path}"
    payload = b"" if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method, url, content=payload, headers=sign(target, method, url, payload, headers)
        )


def answer_of(response: httpx.Response) -> str:
    """`200`, or `404 PAO-REQ-001`: the status, and a refusal's error code."""
    if response.status_code < 400:
        return str(response.status_code)
    return f"{response.status_code} {response.json()['error']['code']}"


@dataclass
class Made:
    """A request the test made, and its resource."""

    request_id: str
    resource_id: str
    environment: str
    db_name: str


def _inputs(environment: str, db_name: str, limit: int = 50) -> dict[str, Any]:
    return {
        "db_name": db_name,
        "environment": environment,
        "connection_limit": limit,
        "owner_email": "orders@example.com",
    }


async def _status(pool: asyncpg.Pool, request_id: str, *wanted: str) -> str:
    async def probe() -> str | None:
        found = await pool.fetchval("SELECT status FROM requests WHERE request_id = $1", request_id)
        return found if found in wanted else None

    return await eventually(probe, timeout=20, what=f"{request_id} {' or '.join(wanted)}")


async def _resource_state(pool: asyncpg.Pool, resource_id: str, wanted: str) -> None:
    async def probe() -> bool:
        found = await pool.fetchval(
            "SELECT state FROM resources WHERE resource_id = $1", resource_id
        )
        return found == wanted

    await eventually(probe, timeout=20, what=f"resource {resource_id} {wanted}")


async def _dispatched(store: EventStore, request_id: str) -> int:
    """The generation of the action the request service dispatched."""

    async def probe() -> list[ev.Event] | None:
        events = [ev.decode(e) for e in await store.read_stream(stream_of(request_id))]
        return [e for e in events if isinstance(e, ev.ActionDispatched)] or None

    found = await eventually(probe, timeout=20, what=f"{request_id} dispatched")
    return found[-1].generation  # type: ignore[attr-defined]


async def _report(store: EventStore, request_id: str, *reports: ev.ActionReport) -> None:
    """Fulfilment's reports about the request's action, appended as fulfilment appends them."""
    await store.append(
        ev.fulfillment_stream(request_id),
        [r.new(actor="pao-fulfillment") for r in reports],
        ANY_VERSION,
    )


async def submitted(stack: Stack, caller: str, environment: str, item: str = ITEM) -> Made:
    """A new request of `caller`, dispatched by the request service."""
    db_name = f"db_{uuid.uuid4().hex[:10]}"
    if item == ITEM:
        inputs = _inputs(environment, db_name)
    else:
        inputs = {
            "application": f"app-{uuid.uuid4().hex[:8]}",
            "environment": environment,
            "assumed_by": "lambda",
        }
    response = await call(stack, caller, "POST", "requests", {"item_id": item, "inputs": inputs})
    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    store = EventStore(stack.pool)
    first = ev.decode((await store.read_stream(stream_of(request_id)))[0])
    assert isinstance(first, ev.RequestSubmitted)
    assert first.resource_id
    made = Made(request_id, first.resource_id, environment, db_name)
    await _dispatched(store, request_id)
    return made


async def running(stack: Stack, environment: str = "staging") -> Made:
    """A request of the requester's whose Terraform action has started."""
    made = await submitted(stack, "requester", environment)
    store = EventStore(stack.pool)
    generation = await _dispatched(store, made.request_id)
    await _report(
        store,
        made.request_id,
        ev.ExecutionStarted(
            request_id=made.request_id,
            action="database",
            generation=generation,
            action_type="terraform",
            attempt=1,
            spec={"module": "modules/postgresql"},
        ),
    )
    await _status(stack.pool, made.request_id, "in_progress")
    return made


async def pending(stack: Stack) -> Made:
    """A production request of the requester's whose plan waits for team-data's approval."""
    made = await submitted(stack, "requester", "prod")
    store = EventStore(stack.pool)
    generation = await _dispatched(store, made.request_id)
    plan = ev.PlanSummary(
        plan_id=f"plan-{uuid.uuid4().hex[:12]}",
        counts={"add": 2, "change": 0, "destroy": 0, "replace": 0},
        changes=[
            {"address": "postgresql_role.owner", "action": "create"},
            {"address": "postgresql_database.this", "action": "create"},
        ],
    )
    start = ev.ExecutionStarted(
        request_id=made.request_id,
        action="database",
        generation=generation,
        action_type="terraform",
        attempt=1,
        spec={"module": "modules/postgresql"},
    )
    planned = ev.ExecutionPlanned(
        request_id=made.request_id, action="database", generation=generation, plan=plan
    )
    await _report(store, made.request_id, start, planned)
    await _status(stack.pool, made.request_id, "awaiting_approval")
    return made


async def failed(stack: Stack) -> Made:
    """A production request of the requester's that team-data rejected."""
    made = await pending(stack)
    no = await call(
        stack, "owner", "POST", f"requests/{made.request_id}/reject", {"comment": "not now"}
    )
    assert no.status_code == 202, no.text
    await _status(stack.pool, made.request_id, "failed")
    await _resource_state(stack.pool, made.resource_id, "failed")
    return made


async def finished(stack: Stack, environment: str = "staging") -> Made:
    """A completed request of the requester's; its resource is active."""
    made = await running(stack, environment)
    store = EventStore(stack.pool)
    generation = await _dispatched(store, made.request_id)
    await _report(
        store,
        made.request_id,
        ev.ExecutionSucceeded(
            request_id=made.request_id,
            action="database",
            generation=generation,
            outputs={"database": made.db_name, "host": "127.0.0.1", "port": 5432},
        ),
    )
    await _status(stack.pool, made.request_id, "completed")
    await _resource_state(stack.pool, made.resource_id, "active")
    return made


MAKERS = {"pending": pending, "running": running, "failed": failed, "finished": finished}


@dataclass
class Scene:
    """The objects every refusal and every list is asked about."""

    made: dict[str, Made]
    #: the requests made before this time are the scene's (a later cell makes its own)
    cutoff: datetime


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scene(stack: Stack) -> Scene:
    made = {
        "pending": await pending(stack),
        "running": await running(stack, "dev"),
        "failed": await failed(stack),
        "finished": await finished(stack, "dev"),
        "theirs": await submitted(stack, "other", "dev"),
        "security": await submitted(stack, "other", "dev", item="iam-role"),
    }
    for one in (made["theirs"], made["security"]):
        await _resource_state(stack.pool, one.resource_id, "provisioning")
    latest = await stack.pool.fetchval("SELECT max(created_at) FROM requests")
    return Scene(made, latest + timedelta(milliseconds=1))


async def _versions(store: EventStore, made: Made) -> tuple[int, int]:
    return (
        await store.stream_version(stream_of(made.request_id)),
        await store.stream_version(resource_stream_of(made.resource_id)),
    )


async def _caused_by(pool: asyncpg.Pool, response: httpx.Response) -> int:
    """How many stored events the call caused (they carry its correlation id)."""
    return await pool.fetchval(
        "SELECT count(*) FROM events WHERE correlation_id = $1",
        response.headers["X-Correlation-ID"],
    )


def _path(endpoint: str, made: Made) -> tuple[str, str]:
    method, template = endpoint.split(",")[0].split(" ")
    path = template.replace("{request}", f"requests/{made.request_id}")
    return method, path.replace("{resource}", f"resources/{made.resource_id}")


@pytest.mark.parametrize(("endpoint", "caller", "expected"), LIST_CELLS)
async def test_each_caller_lists_exactly_what_they_may_see(
    stack: Stack, scene: Scene, endpoint: str, caller: str, expected: set[str]
) -> None:
    names = {m.request_id: n for n, m in scene.made.items()}
    if endpoint == "GET requests":
        query = httpx.QueryParams({"created_before": scene.cutoff.isoformat(), "limit": 500})
        response = await call(stack, caller, "GET", f"requests?{query}")
        assert response.status_code == 200, response.text
        seen = [names.get(r["request_id"], r["request_id"]) for r in response.json()["requests"]]
    elif endpoint == "GET approvals":
        response = await call(stack, caller, "GET", "approvals")
        assert response.status_code == 200, response.text
        seen = [names.get(a["request_id"], a["request_id"]) for a in response.json()["approvals"]]
    else:
        by_resource = {m.resource_id: n for n, m in scene.made.items()}
        response = await call(stack, caller, "GET", "resources?environment=dev&limit=500")
        assert response.status_code == 200, response.text
        rows = response.json()["resources"]
        seen = [by_resource.get(r["resource_id"], r["resource_id"]) for r in rows]
    assert sorted(seen) == sorted(expected)


@pytest.mark.parametrize(("endpoint", "caller", "expected"), CELLS)
async def test_each_caller_gets_exactly_their_answer(
    stack: Stack, scene: Scene, endpoint: str, caller: str, expected: str
) -> None:
    kind, body = TARGETS[endpoint]
    changes = endpoint.startswith("POST") and expected == ACCEPTED
    made = await MAKERS[kind](stack) if changes else scene.made[kind]
    if endpoint.endswith("/update"):
        body = {"inputs": _inputs(made.environment, made.db_name, limit=80)}
    store = EventStore(stack.pool)
    before = await _versions(store, made)
    method, path = _path(endpoint, made)

    with capture_logs() as logs:
        response = await call(stack, caller, method, path, body)

    assert answer_of(response) == expected, response.text
    if response.status_code >= 400:
        assert await _versions(store, made) == before
        assert await _caused_by(stack.pool, response) == 0
        # The refusal is audited: who was refused what, and why.
        audited = [
            line
            for line in logs
            if line["event"] == "request" and line.get("path") == f"/api/v1/{path}"
        ]
        assert [(a["user"], a["status"], a["error_code"]) for a in audited] == [
            (PEOPLE[caller][0], response.status_code, response.json()["error"]["code"])
        ]
        return
    answer = response.json()
    if kind == "finished":
        assert answer["resource_id"] == made.resource_id
    else:
        assert answer["request_id"] == made.request_id
    if changes:
        assert await _caused_by(stack.pool, response) > 0
    if endpoint.endswith("/plan"):
        assert [p["plan_id"] for p in answer["plans"]]
