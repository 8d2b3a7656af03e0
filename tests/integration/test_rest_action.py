"""REST actions against real servers. Each auth scheme is checked by the server it calls (SigV4 by
moto, which verifies signatures and IAM policies); through the worker, retries honour
Retry-After and carry one idempotency key, outputs feed the next action, an asynchronous API is
polled to the end; redirects, caps and the guard rails hold; and no secret a run used is left in
the database, the fallback ticket or the logs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import asyncpg
import boto3
import pytest
import pytest_asyncio
import structlog
import yaml
from aiohttp import web
from multidict import CIMultiDict
from test_request_flow import api, status_becomes, submit

from conftest import REPO, fresh_database
from pao.devstack.aws import AwsIdentity
from pao.fulfillment.executors import ActionError, Finished, RunKey
from pao.fulfillment.rest import RestExecutor
from pao.fulfillment.restauth import AwsAccess
from pao.shared.keystore import KeyStore
from pao.shared.secrets import env_name
from pao.shared.settings import Settings
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request", "fulfillment")
KEY = RunKey("0f1e2d3c-aaaa-bbbb-cccc-000000000001", "call_api", 0, environment="dev")
Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request a test server received."""

    method: str
    path: str
    query_string: str  # as sent, still encoded
    headers: CIMultiDict[str]
    body: bytes
    at: float


@dataclass
class Api:
    """A local HTTP API: each test scripts the answers of its own paths, and every request is
    recorded."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    _replies: dict[str, list[Reply]] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def script(self, path: str, *replies: Reply) -> None:
        """Answer `path` with these replies in turn; the last one then answers every time."""
        self._replies[path] = list(replies)

    def calls(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.raw_path.partition("?")[2],
                CIMultiDict(request.headers),
                body,
                time.time(),
            )
        )
        replies = self._replies.get(request.path)
        if not replies:
            return web.json_response({"error": "nothing here"}, status=404)
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return await reply(request)


def answer(
    status: int = 200, body: Any = None, *, text: str | None = None, headers: Any = None
) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        if text is not None:
            return web.Response(status=status, text=text, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return reply


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Api]:
    api_ = Api()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api_.handle)
    runner = web.AppRunner(app, access_log=None)  # its access log would show query strings
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    api_.url = f"http://{host}:{port}"
    try:
        yield api_
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service() -> AsyncIterator[Api]:
    """The API the actions call."""
    async with serving() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def elsewhere() -> AsyncIterator[Api]:
    """Another host (another port of the loopback): where redirects lead, or a host not allowed."""
    async with serving() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def executor(session: aiohttp.ClientSession, *allowed: str, **kwargs: Any) -> RestExecutor:
    return RestExecutor(session, allowed_hosts=allowed or ("127.0.0.1:*",), **kwargs)


def path_of(name: str) -> str:
    return f"/{name}-{uuid.uuid4().hex[:8]}"


async def test_bearer_basic_and_hmac_are_checked_by_the_server(
    http: aiohttp.ClientSession, service: Api
) -> None:
    bearer, basic, signed = path_of("bearer"), path_of("basic"), path_of("hmac")
    hmac_key = "shared-hmac-key"

    async def check_bearer(request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") == "Bearer tok-123"
        return web.json_response({"who": "bearer"} if ok else {}, status=200 if ok else 401)

    async def check_basic(request: web.Request) -> web.Response:
        try:
            given = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            return web.json_response({}, status=401)
        ok = (given.login, given.password) == ("deployer", "pa:ss word")
        return web.json_response({"who": given.login} if ok else {}, status=200 if ok else 401)

    async def check_hmac(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Hub-Timestamp", "0")
        message = b"\n".join(
            [
                request.method.encode(),
                request.raw_path.partition("?")[0].encode(),
                request.raw_path.partition("?")[2].encode(),
                stamp.encode(),
                body,
            ]
        )
        digest = hmac.new(hmac_key.encode(), message, hashlib.sha512).digest()
        wanted = "sha512=" + base64.b64encode(digest).decode()
        fresh = abs(time.time() - int(stamp)) < 300
        ok = fresh and hmac.compare_digest(wanted, request.headers.get("X-Hub-Signature", ""))
        return web.json_response({"who": "hmac"} if ok else {}, status=200 if ok else 401)

    service.script(bearer, check_bearer)
    service.script(basic, check_basic)
    service.script(signed, check_hmac)
    rest = executor(http)
    outputs = {"who": "/who"}
    done = await rest.run(
        {
            "method": "GET",
            "url": service.url + bearer,
            "outputs": outputs,
            "auth": {"type": "bearer", "token": "tok-123"},
        },
        KEY,
    )
    assert done == Finished({"status_code": 200, "who": "bearer"})
    done = await rest.run(
        {
            "method": "GET",
            "url": service.url + basic,
            "outputs": outputs,
            "auth": {"type": "basic", "username": "deployer", "password": "pa:ss word"},
        },
        KEY,
    )
    assert done == Finished({"status_code": 200, "who": "deployer"})
    hmac_auth = {
        "type": "hmac",
        "secret": hmac_key,
        "header": "X-Hub-Signature",
        "algorithm": "sha512",
        "encoding": "base64",
        "prefix": "sha512=",
        "timestamp_header": "X-Hub-Timestamp",
        "signed": ["method", "path", "query", "timestamp", "body"],
    }
    spec = {
        "method": "POST",
        "url": f"{service.url}{signed}?zone=eu west&kind=a+b",
        "query": {"page": "2"},
        "body": {"name": "orders", "note": "ünïcode"},
        "outputs": outputs,
        "auth": hmac_auth,
    }
    assert await rest.run(spec, KEY) == Finished({"status_code": 200, "who": "hmac"})

    # A wrong credential is refused by the server: a permanent failure that shows no credential.
    for wrong in (
        {**hmac_auth, "secret": "not-the-key"},
        {"type": "bearer", "token": "tok-999"},
    ):
        with pytest.raises(ActionError) as refused:
            await rest.run(
                {
                    **spec,
                    "url": service.url + (signed if "secret" in wrong else bearer),
                    "auth": wrong,
                },
                KEY,
            )
        assert not refused.value.transient
        assert "answered 401" in refused.value.message
        assert "not-the-key" not in refused.value.message
        assert "tok-999" not in refused.value.message
        assert "zone" not in refused.value.message  # never the query string


def use_aws(identity: AwsIdentity, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's standard credential chain finds the bootstrapped key, and only it."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in identity.environ().items():
        monkeypatch.setenv(name, value)


SSM_PUT = {
    "method": "POST",
    "url": "/",
    "auth": {"type": "aws_sigv4", "service": "ssm"},
    "headers": {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AmazonSSM.PutParameter",
    },
    "outputs": {"version": "/Version"},
}


async def test_sigv4_calls_are_verified_by_aws(
    http: aiohttp.ClientSession, aws_stack: AwsIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_aws(aws_stack, monkeypatch)
    rest = executor(
        http, aws=AwsAccess(region=aws_stack.region, endpoint_url=aws_stack.endpoint_url)
    )
    name = f"/pao/tests/{uuid.uuid4().hex[:8]}/endpoint"
    put = {**SSM_PUT, "body": {"Name": name, "Value": "https://orders", "Type": "String"}}
    assert await rest.run(put, KEY) == Finished({"status_code": 200, "version": 1})

    topic = f"orders-{uuid.uuid4().hex[:8]}"
    created = await rest.run(
        {
            "method": "POST",
            "url": "/",
            "auth": {"type": "aws_sigv4", "service": "sns"},
            "form": {
                "Action": "CreateTopic",
                "Version": "2010-03-31",
                "Name": topic,
                "Attributes.entry.1.key": "DisplayName",
                "Attributes.entry.1.value": "Orders (EU) / alerts & more",
            },
            "outputs": {"topic_arn": "/CreateTopicResponse/CreateTopicResult/TopicArn"},
        },
        KEY,
    )
    assert isinstance(created, Finished)
    arn = created.outputs["topic_arn"]
    assert arn == f"arn:aws:sns:{aws_stack.region}:{aws_stack.account_id}:{topic}"

    ssm = boto3.client("ssm", region_name=aws_stack.region)
    sns = boto3.client("sns", region_name=aws_stack.region)
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "https://orders"
    assert arn in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    shown = sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"]
    assert shown == "Orders (EU) / alerts & more"

    # moto checks the signature: one made with the wrong secret key is refused, for good.
    forged = {
        **put,
        "auth": {
            "type": "aws_sigv4",
            "service": "ssm",
            "access_key_id": aws_stack.access_key_id,
            "secret_access_key": "not-the-secret-key",
        },
    }
    with pytest.raises(ActionError) as refused:
        await rest.run(forged, KEY)
    assert not refused.value.transient
    assert "answered 403" in refused.value.message
    assert "not-the-secret-key" not in refused.value.message


async def test_an_assumed_role_signs_the_call(
    http: aiohttp.ClientSession,
    aws_stack: AwsIdentity,
    service: Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_aws(aws_stack, monkeypatch)
    # The role comes from the environment (aws_role_arn), as production assumes one per account.
    rest = executor(
        http,
        aws=AwsAccess(region=aws_stack.region, endpoint_url=aws_stack.endpoint_url),
        environments={"dev": {"aws_role_arn": aws_stack.role_arn}},
    )
    who = {
        "method": "POST",
        "url": "/",
        "auth": {"type": "aws_sigv4", "service": "sts"},
        "form": {"Action": "GetCallerIdentity", "Version": "2011-06-15"},
        "outputs": {"arn": "/GetCallerIdentityResponse/GetCallerIdentityResult/Arn"},
    }
    first = await rest.run(who, KEY)
    role = aws_stack.role_arn.rsplit("/", 1)[1]
    assert isinstance(first, Finished)
    assert first.outputs["arn"] == (
        f"arn:aws:sts::{aws_stack.account_id}:assumed-role/{role}/pao-{KEY.request_id[:8]}"
    )
    # Named on the action instead, with its own session name; the role's policy allows SSM.
    name = f"/pao/tests/{uuid.uuid4().hex[:8]}/assumed"
    put = {
        **SSM_PUT,
        "auth": {
            "type": "aws_sigv4",
            "service": "ssm",
            "role_arn": aws_stack.role_arn,
            "session_name": "pao-deployer",
        },
        "body": {"Name": name, "Value": "by-role", "Type": "String"},
    }
    plain = executor(
        http, aws=AwsAccess(region=aws_stack.region, endpoint_url=aws_stack.endpoint_url)
    )
    assert await plain.run(put, KEY) == Finished({"status_code": 200, "version": 1})
    ssm = boto3.client("ssm", region_name=aws_stack.region)
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "by-role"
    caller = await plain.run({**who, "auth": put["auth"] | {"service": "sts"}}, KEY)
    assert isinstance(caller, Finished)
    assert caller.outputs["arn"].endswith(f":assumed-role/{role}/pao-deployer")

    # The role's credentials are kept: calls of the same run sign with the same temporary key.
    recorder = path_of("signed")
    service.script(recorder, answer(200, {}))
    signed_get = {"method": "GET", "url": service.url + recorder, "auth": put["auth"]}
    for _ in range(2):
        await plain.run(signed_get, KEY)
    keys_used = {
        c.headers["Authorization"].split("Credential=")[1].split("/")[0]
        for c in service.calls(recorder)
    }
    assert len(keys_used) == 1
    assert keys_used != {aws_stack.access_key_id}


async def test_a_redirect_fails_unless_followed_and_another_host_gets_no_credentials(
    http: aiohttp.ClientSession, service: Api, elsewhere: Api
) -> None:
    moved, landing, same, here = (path_of(n) for n in ("moved", "landing", "same", "here"))
    service.script(moved, answer(307, {}, headers={"Location": f"{elsewhere.url}{landing}?t=x1"}))
    service.script(same, answer(302, {}, headers={"Location": here}))
    service.script(here, answer(200, {"where": "here"}))
    elsewhere.script(landing, answer(200, {"where": "landing"}))
    bearer = {"type": "bearer", "token": "tok-redirect"}
    spec = {
        "method": "POST",
        "url": service.url + moved,
        "body": {"a": 1},
        "auth": bearer,
        "outputs": {"where": "/where"},
    }
    rest = executor(http)

    with pytest.raises(ActionError) as refused:
        await rest.run(spec, KEY)
    assert not refused.value.transient
    assert f"a redirect to {elsewhere.host}{landing};" in refused.value.message
    assert "t=x1" not in refused.value.message
    assert elsewhere.calls(landing) == []

    followed = await rest.run({**spec, "follow_redirects": True}, KEY)
    assert followed == Finished({"status_code": 200, "where": "landing"})
    [hop] = elsewhere.calls(landing)
    assert "Authorization" not in hop.headers
    assert "Idempotency-Key" not in hop.headers
    assert hop.body == b'{"a":1}'
    assert hop.method == "POST"
    assert service.calls(moved)[-1].headers["Authorization"] == "Bearer tok-redirect"

    # On the same host the credentials go along (a 302 after a POST becomes a GET).
    again = await rest.run({**spec, "url": service.url + same, "follow_redirects": True}, KEY)
    assert again == Finished({"status_code": 200, "where": "here"})
    assert service.calls(here)[-1].headers["Authorization"] == "Bearer tok-redirect"
    assert service.calls(here)[-1].method == "GET"

    # A SigV4 signature is not carried to another host either.
    signed = {
        **spec,
        "follow_redirects": True,
        "auth": {
            "type": "aws_sigv4",
            "service": "execute-api",
            "region": "eu-west-1",
            "access_key_id": "AKIAEXAMPLEKEY000001",
            "secret_access_key": "x" * 40,
        },
    }
    await rest.run(signed, KEY)
    assert (
        service.calls(moved)[-1]
        .headers["Authorization"]
        .startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY000001/")
    )
    hop = elsewhere.calls(landing)[-1]
    assert not [h for h in hop.headers if h.lower().startswith(("authorization", "x-amz"))]

    # The hop's host must be allowed too.
    only_here = executor(http, service.host)
    with pytest.raises(ActionError) as blocked:
        await only_here.run({**spec, "follow_redirects": True}, KEY)
    assert f"host {elsewhere.host} is not allowed" in blocked.value.message
    assert "PAO_REST_ALLOWED_HOSTS" in blocked.value.message


async def test_an_answer_beyond_the_cap_fails_for_good(
    http: aiohttp.ClientSession, service: Api
) -> None:
    sized, streamed = path_of("sized"), path_of("streamed")
    service.script(sized, answer(200, text="x" * 5_000))

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"y" * 1_000)
        await response.write_eof()
        return response

    service.script(streamed, stream)
    rest = executor(http)
    for path in (sized, streamed):
        with pytest.raises(ActionError) as capped:
            await rest.run(
                {"method": "GET", "url": service.url + path, "max_response_bytes": 4_096}, KEY
            )
        assert not capped.value.transient
        assert "more than 4096 bytes (max_response_bytes)" in capped.value.message
    small = await rest.run({"method": "GET", "url": service.url + sized}, KEY)
    assert small == Finished({"status_code": 200})


async def test_a_poll_ends_on_failure_or_on_its_timeout(
    http: aiohttp.ClientSession, service: Api
) -> None:
    start, status = path_of("start"), path_of("status")
    service.script(start, answer(202, {}, headers={"Location": status}))
    service.script(status, answer(200, {"state": "running"}), answer(200, {"state": "failed"}))
    rest = executor(http)
    spec = {
        "method": "POST",
        "url": service.url + start,
        "poll": {
            "url_header": "Location",
            "interval_seconds": 0.1,
            "timeout_seconds": 5,
            "until": [{"pointer": "/state", "equals": "done"}],
            "fail_when": [{"pointer": "/state", "equals": "failed"}],
        },
    }
    with pytest.raises(ActionError) as failed:
        await rest.run(spec, KEY)
    assert not failed.value.transient
    assert '/state equals "failed" (poll.fail_when)' in failed.value.message
    service.script(status, answer(200, {"state": "running"}))
    began = time.monotonic()
    with pytest.raises(ActionError) as late:
        await rest.run({**spec, "poll": {**spec["poll"], "timeout_seconds": 1}}, KEY)
    assert time.monotonic() - began >= 1.0
    assert not late.value.transient
    assert "not done within 1 s" in late.value.message


HEADER = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: {id}
  name: {name}
  category: {category}
  owner: team-platform
  version: 1.0.0
  description: {name}, through its HTTP API.
form:
  schema:
    type: object
    required: [name]
    properties:
      name: {{type: string, pattern: "^[a-z][a-z0-9-]{{2,40}}$"}}
      label: {{type: string}}
      target: {{enum: [allowed, blocked], default: allowed}}
    examples: [{{name: orders}}]
"""

REGISTRATION = """
fulfillment:
  mode: automated
  actions:
    - name: register
      type: rest
      retry: {max_attempts: 5, initial_backoff_seconds: 0.1, max_backoff_seconds: 1}
      rest:
        method: POST
        url: "{{ env.api }}/services/{{ inputs.name }}"
        body: {name: "{{ inputs.name }}"}
        outputs: {service_id: /service/id}
    - name: add_check
      type: rest
      rest:
        method: PUT
        url: "{{ env.api }}/services/{{ outputs.register.service_id }}/check"
        body: {service: "{{ outputs.register.service_id }}", interval: 10}
        success: {status: [200], body: [{pointer: /check/active, equals: true}]}
        outputs: {check_id: /check/id}
"""

EXPORT = """
fulfillment:
  mode: automated
  actions:
    - name: export
      type: rest
      rest:
        method: POST
        url: "{{ env.api }}/exports/{{ inputs.name }}"
        body: {report: "{{ inputs.name }}"}
        idempotency: {body_pointer: /clientToken}
        success: {status: [202]}
        outputs: {job_id: /job/id}
        poll:
          url_pointer: /job/status_url
          interval_seconds: 0.2
          timeout_seconds: 30
          until: [{pointer: /state, equals: done}]
          fail_when: [{pointer: /state, equals: failed}]
          outputs: {download_url: /result/url, rows: /result/rows}
"""

GUARDED = """
fulfillment:
  mode: automated
  actions:
    - name: sync
      type: rest
      retry: {max_attempts: 3, initial_backoff_seconds: 0.1}
      rest:
        method: POST
        url: >-
          {{ env.api if inputs.target == 'allowed' else env.blocked_api }}/labels/{{ inputs.name }}
        headers: {X-Label: "{{ inputs.label }}"}
"""

SECRET_PATH = "/pao/tests/rest-api-key"
ECHOING = f"""
secrets:
  api_key: {{path: {SECRET_PATH}, description: Key of the echo API.}}
fulfillment:
  mode: automated
  fallback:
    strategy: manual
    jira:
      project: OPS
      issue_type: Task
      summary: "Confirm key sync of {{{{ inputs.name }}}} by hand ({{{{ request.id }}}})"
      description: "Registered as {{{{ outputs.register.echo }}}} ({{{{ outputs.register.id }}}})"
  actions:
    - name: register
      type: rest
      retry: {{max_attempts: 3, initial_backoff_seconds: 0.1}}
      rest:
        method: POST
        url: "{{{{ env.api }}}}/echo/{{{{ inputs.name }}}}"
        query: {{api_key: "{{{{ secrets.api_key }}}}"}}
        headers: {{X-Api-Key: "{{{{ secrets.api_key }}}}"}}
        body: {{name: "{{{{ inputs.name }}}}", token: "{{{{ secrets.api_key }}}}"}}
        outputs: {{echo: /echo, encoded: /encoded, id: /id}}
    - name: confirm
      type: rest
      retry: {{max_attempts: 2, initial_backoff_seconds: 0.1}}
      rest:
        method: POST
        url: "{{{{ env.api }}}}/confirm/{{{{ inputs.name }}}}/{{{{ secrets.api_key }}}}"
        auth: {{type: bearer, token: "{{{{ secrets.api_key }}}}"}}
"""

ITEMS = {
    ("networking", "service-registration", "Service registration"): REGISTRATION,
    ("observability", "report-export", "Report export"): EXPORT,
    ("networking", "label-sync", "Label sync"): GUARDED,
    ("security", "key-sync", "Key sync"): ECHOING,
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    service: Api,
    elsewhere: Api,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("rest-actions")
    catalog = root / "catalog"
    shutil.copytree(REPO / "catalog" / "schema", catalog / "schema")
    for (category, item_id, name), fulfilment in ITEMS.items():
        (catalog / category).mkdir(exist_ok=True)
        text = HEADER.format(id=item_id, name=name, category=category) + fulfilment
        (catalog / category / f"{item_id}.yaml").write_text(text)
    environments = root / "environments.yaml"
    environments.write_text(
        yaml.safe_dump(
            {
                "dev": {
                    "api": service.url,
                    "blocked_api": elsewhere.url,
                    "rest_allowed_hosts": [service.host],
                }
            }
        )
    )
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.2,
                "catalog_dir": catalog,
                "environments_file": environments,
                "secrets_provider": "env",
            }
        )
        async with running_stack(own, keys, services=SERVICES, data_dir=root / "state") as running:
            yield running


async def ends(stack: Stack, request_id: str, *wanted: str) -> tuple[str, dict[str, Any]]:
    """The request's status once it is one of `wanted`, and its actions in detail, by name."""
    status = await status_becomes(stack, request_id, *wanted)
    detail = await api(stack, "GET", f"/requests/{request_id}")
    return status["status"], {a["name"]: a for a in detail["actions"]}


async def test_retries_honour_retry_after_with_one_idempotency_key_and_outputs_feed_the_next(
    stack: Stack, service: Api
) -> None:
    name = f"orders-{uuid.uuid4().hex[:6]}"
    register, check = f"/services/{name}", f"/services/svc-{name}/check"
    resume_at: list[float] = []

    async def throttled_until_a_date(request: web.Request) -> web.Response:
        at = math.floor(time.time()) + 3
        resume_at.append(at)
        when = format_datetime(datetime.fromtimestamp(at, UTC), usegmt=True)
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": when})

    service.script(
        register,
        answer(503, {"error": "starting"}),
        answer(429, {"error": "slow down"}, headers={"Retry-After": "1"}),
        throttled_until_a_date,
        answer(201, {"service": {"id": f"svc-{name}"}}),
    )
    service.script(check, answer(200, {"check": {"id": "chk-7", "active": True}}))

    request_id = await submit(stack, "service-registration", {"name": name})
    status, actions = await ends(stack, request_id, "completed", "failed")
    assert status == "completed", actions
    assert actions["register"]["outputs"] == {"status_code": 201, "service_id": f"svc-{name}"}
    assert actions["register"]["attempts"] == 4
    assert actions["add_check"]["outputs"] == {"status_code": 200, "check_id": "chk-7"}

    attempts = service.calls(register)
    assert len(attempts) == 4
    assert {a.headers["Idempotency-Key"] for a in attempts} == {f"pao-{request_id}-register"}
    # Each wait at least what the server asked for; 0.1 s of slack, downwards only.
    assert attempts[2].at - attempts[1].at >= 1.0 - 0.1
    assert attempts[3].at >= resume_at[0] - 0.1
    [checked] = service.calls(check)
    assert json.loads(checked.body) == {"service": f"svc-{name}", "interval": 10}
    assert checked.headers["Idempotency-Key"] == f"pao-{request_id}-add-check"


async def test_an_asynchronous_api_is_polled_until_it_is_done(stack: Stack, service: Api) -> None:
    name = f"sales-{uuid.uuid4().hex[:6]}"
    start, progress = f"/exports/{name}", f"/exports/{name}/status"
    service.script(start, answer(202, {"job": {"id": "job-9", "status_url": progress}}))
    service.script(
        progress,
        answer(200, {"state": "pending"}),
        answer(200, {"state": "pending"}, headers={"Retry-After": "1"}),
        answer(200, {"state": "done", "result": {"url": "https://files/x.csv", "rows": 12}}),
    )
    request_id = await submit(stack, "report-export", {"name": name})
    status, actions = await ends(stack, request_id, "completed", "failed")
    assert status == "completed", actions
    assert actions["export"]["outputs"] == {
        "status_code": 202,
        "job_id": "job-9",
        "download_url": "https://files/x.csv",
        "rows": 12,
    }
    [call] = service.calls(start)
    assert json.loads(call.body) == {"report": name, "clientToken": f"pao-{request_id}-export"}
    polls = service.calls(progress)
    assert len(polls) == 3
    assert polls[2].at - polls[1].at >= 1.0 - 0.1  # the Retry-After of a poll answer


async def test_a_line_break_from_the_inputs_or_a_host_not_allowed_fails_at_once(
    stack: Stack, service: Api, elsewhere: Api
) -> None:
    name = f"team-{uuid.uuid4().hex[:6]}"
    smuggled = await submit(stack, "label-sync", {"name": name, "label": "blue\r\nX-Admin: yes"})
    status, actions = await ends(stack, smuggled, "failed", "completed")
    sync = actions["sync"]
    assert status == "failed"
    assert sync["attempts"] == 1
    assert "header X-Label contains a line break" in sync["error"]
    assert service.calls(f"/labels/{name}") == []

    blocked = await submit(
        stack, "label-sync", {"name": name, "label": "blue", "target": "blocked"}
    )
    status, actions = await ends(stack, blocked, "failed", "completed")
    sync = actions["sync"]
    assert status == "failed"
    assert sync["attempts"] == 1
    assert f"host {elsewhere.host} is not allowed" in sync["error"]
    assert "rest_allowed_hosts of environment dev" in sync["error"]
    assert elsewhere.calls(f"/labels/{name}") == []
    logs = await api(stack, "GET", f"/requests/{blocked}/logs")
    assert "ExecutionRetryScheduled" not in [e["event_type"] for e in logs["entries"]]


def forms_of(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(secret, safe=""),
        quote_plus(secret),
        raw.hex(),  # how a bytea column shows it
    ]


async def rows_holding(pool: asyncpg.Pool, needles: list[str]) -> list[str]:
    """Every table of the database, row by row as text: where any needle is found."""
    tables = await pool.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' "
        "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    found = []
    for table in tables:
        name = f'"{table["table_schema"]}"."{table["table_name"]}"'
        for row in await pool.fetch(f"SELECT t::text AS row FROM {name} t"):
            found += [f"{name}: {n}" for n in needles if n in row["row"]]
    assert len(tables) > 10, "the scan must see the database's tables"
    return found


async def test_no_secret_a_run_used_is_left_anywhere(
    stack: Stack,
    service: Api,
    jira_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = f"Pao+S3cr3t={uuid.uuid4().hex}&k"
    monkeypatch.setenv(env_name(SECRET_PATH), secret)
    caplog.set_level(logging.DEBUG)
    name = f"vault-{uuid.uuid4().hex[:6]}"
    echo, confirm = f"/echo/{name}", f"/confirm/{name}/{secret}"

    async def echo_it(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "echo": request.query["api_key"],
                "encoded": base64.b64encode(request.headers["X-Api-Key"].encode()).decode(),
                "id": f"key-{name}",
            }
        )

    async def refuse_it(request: web.Request) -> web.Response:
        return web.json_response({"error": f"key {secret} refused"}, status=403)

    service.script(echo, answer(500, text=f"upstream said no to {secret}"), echo_it)
    service.script(confirm, refuse_it)
    with structlog.testing.capture_logs() as logged:
        request_id = await submit(stack, "key-sync", {"name": name})
        _, actions = await ends(stack, request_id, "awaiting_manual", "failed")
    ticket = actions["fallback"]["outputs"]["key"]

    # The secret went where the item said: the query, the header, the body, the path, the auth.
    first = service.calls(echo)[0]
    assert first.headers["X-Api-Key"] == secret
    assert json.loads(first.body)["token"] == secret
    assert quote(secret, safe="") in first.query_string
    assert service.calls(confirm)[0].headers["Authorization"] == f"Bearer {secret}"
    # What came back with it is recorded masked.
    assert actions["register"]["outputs"] == {
        "status_code": 200,
        "echo": "***",
        "encoded": "***",
        "id": f"key-{name}",
    }
    assert actions["confirm"]["status"] == "failed"
    assert actions["confirm"]["error"] == f"POST {service.host}/confirm/{name}/*** answered 403"

    needles = forms_of(secret)
    assert await rows_holding(stack.pool, needles) == []
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{jira_url}/rest/api/2/issue/{ticket}") as response,
    ):
        issue = await response.text()
    assert f"Registered as *** (key-{name})" in issue
    assert [n for n in needles if n in issue] == []
    out, err = capfd.readouterr()
    text = "\n".join([out, err, caplog.text, *(json.dumps(e, default=str) for e in logged)])
    assert "REST call answered" in text  # the capture saw the worker's calls
    assert [n for n in needles if n in text] == []
