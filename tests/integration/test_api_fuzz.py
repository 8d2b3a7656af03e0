"""Schemathesis against a running gateway: every operation of the served OpenAPI document, called
with generated inputs and signed as devctl signs, answers only what the document promises, and
bad input of any shape gets a documented 4xx with the error envelope, never a 5xx.

The gateway runs on the session's event loop; the generated calls are blocking (requests), so
each test drives them from a worker thread while the loop keeps serving. The examples per
operation are derandomised and bounded so the module stays quick; PAO_FUZZ_EXAMPLES=200
PAO_FUZZ_RANDOM=1 searches longer and afresh.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import requests
import schemathesis
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import TEST_KEY_ID, TEST_SECRET
from pao.catalog.bootstrap import CatalogParts
from pao.contracts import errors
from pao.contracts.errors import ErrorResponse
from pao.contracts.openapi import PREFIX, document
from pao.devctl.client import Target, sign
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support.documents import resolve

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOC = document()
#: Items of the repository's catalog, so that item endpoints reach their 200 answers too.
KNOWN_ITEMS = ("postgresql-standard", "sqs-queue", "service-starter")
EXAMPLES = int(os.environ.get("PAO_FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ENVELOPE_KEYS = {"code", "message", "details", "suggestion", "correlation_id"}
_CODE_RE = re.compile(r"^PAO-[A-Z]+-\d{3}$")
_TRACEBACK_RE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
#: A request and a resource nobody has: the calls on them answer 404 after reading their body.
UNKNOWN_REQUEST = "req-00000000000000000000000000"
UNKNOWN_RESOURCE = "res-00000000000000000000000000"

DANA = Target("", "us-east-1", ReadOnlyCredentials(TEST_KEY_ID, TEST_SECRET, None))


def _operations(method: str | None = None) -> list[tuple[str, str]]:
    return [
        (verb.upper(), path)
        for path, item in DOC["paths"].items()
        for verb in item
        if method is None or verb == method
    ]


def _op_id(op: tuple[str, str]) -> str:
    return f"{op[0]} {op[1].removeprefix(PREFIX)}"


def _signed(method: str, path: str) -> bool:
    return DOC["paths"][path][method.lower()]["security"] == [{"sigv4": []}]


def _documented(method: str, path: str) -> dict[str, Any]:
    return DOC["paths"][path][method.lower()]["responses"]


class DevctlSigV4(requests.auth.AuthBase):
    """Signs each prepared request, body included, with devctl's own `sign`."""

    def __init__(self, target: Target = DANA) -> None:
        self.target = target

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {k: v for k, v in r.headers.items() if k.lower() != "authorization"}
        r.headers.update(sign(self.target, r.method or "GET", r.url or "", body, headers))
        return r


@dataclass(frozen=True)
class Answer:
    """What the gateway answered, from either a requests or a Schemathesis response."""

    url: str
    status: int
    headers: CaseInsensitiveDict
    text: str

    @classmethod
    def of(cls, response: requests.Response | schemathesis.Response) -> Answer:
        if isinstance(response, requests.Response):
            return cls(response.url, response.status_code, response.headers, response.text)
        headers = CaseInsensitiveDict({k: v[0] for k, v in response.headers.items()})
        text = response.content.decode("utf-8", errors="replace")
        return cls(response.request.url or "", response.status_code, headers, text)


def assert_answer_is_sound(method: str, path: str, answer: Answer) -> None:
    """No 5xx, no traceback, a documented status, and the envelope on every 4xx."""
    where = f"{method} {answer.url[:300]} answered {answer.status}: {answer.text[:500]}"
    assert answer.status < 500, where
    assert not _TRACEBACK_RE.search(answer.text), where
    assert str(answer.status) in _documented(method, path), where
    assert answer.headers.get("X-Correlation-ID"), where
    if 400 <= answer.status < 500:
        documented = _documented(method, path)[str(answer.status)]
        ref = documented["content"]["application/json"]["schema"]["$ref"]
        assert resolve(DOC, ref) == DOC["components"]["schemas"]["ErrorResponse"], where
        assert_envelope(answer, where)


def assert_envelope(answer: Answer, where: str) -> dict[str, Any]:
    """The error envelope, exactly: its fields, a registered code answered with its own status."""
    assert answer.headers.get("Content-Type", "").startswith("application/json"), where
    body = json.loads(answer.text)
    assert set(body) == {"error"}, where
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS, where
    ErrorResponse.model_validate(body)
    assert _CODE_RE.match(error["code"]), where
    assert error["code"] in errors.REGISTRY, where
    assert errors.REGISTRY[error["code"]].http_status == answer.status, where
    assert error["message"], where
    assert error["suggestion"], where
    assert error["correlation_id"] == answer.headers["X-Correlation-ID"], where
    return error


def _with_known_item(case: schemathesis.Case, item_id: str) -> schemathesis.Case:
    if "item_id" in (case.path_parameters or {}):
        case.path_parameters = {**case.path_parameters, "item_id": item_id}
    elif isinstance(case.body, dict) and "item_id" in case.body:
        case.body = {**case.body, "item_id": item_id}
    return case


def _strategy(operation: Any, mode: GenerationMode) -> st.SearchStrategy:
    """Generated cases; most of those naming a catalog item name one the catalog has. Submits
    keep their generated item: a valid one would record requests other tests count."""
    cases = operation.as_strategy(generation_mode=mode)
    takes_item = "{item_id}" in operation.path or operation.path.startswith(
        (f"{PREFIX}/validate/request", f"{PREFIX}/preview/", f"{PREFIX}/test/")
    )
    if not takes_item:
        return cases
    return st.tuples(cases, st.sampled_from((None, *KNOWN_ITEMS))).map(
        lambda pair: pair[0] if pair[1] is None else _with_known_item(*pair)
    )


def _fuzz(base_url: str, method: str, path: str, mode: GenerationMode) -> int:
    """Run the generated cases of one operation; the number of calls made."""
    schema = schemathesis.openapi.from_url(f"{base_url}{PREFIX}/openapi.json")
    operation = schema[path][method]
    auth = DevctlSigV4() if _signed(method, path) else None
    calls = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("PAO_FUZZ_RANDOM"),
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal calls
        calls += 1
        with requests.Session() as session:
            response = case.call(base_url=base_url, session=session, auth=auth, timeout=10)
        case.validate_response(
            response, checks=CHECKS, transport_kwargs={"base_url": base_url, "auth": auth}
        )
        assert_answer_is_sound(method, path, Answer.of(response))

    run()
    return calls


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("op", _operations(), ids=_op_id)
async def test_every_operation_answers_as_documented(
    gateway: str, op: tuple[str, str], mode: GenerationMode
) -> None:
    method, path = op
    calls = await asyncio.to_thread(_fuzz, gateway, method, path, mode)
    assert calls > 0


# Hostile bodies: each signed correctly, each answered with a documented 4xx and the envelope.

DEPTH = 10_000
HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    "not-json": (b"this is { not json", "application/json"),
    "array": (b"[]", "application/json"),
    "array-of-objects": (b'[{"item_id": "postgresql-standard"}]', "application/json"),
    "string": (b'"postgresql-standard"', "application/json"),
    "number": (b"42", "application/json"),
    "null": (b"null", "application/json"),
    "true": (b"true", "application/json"),
    "deep-arrays": (b"[" * DEPTH + b"]" * DEPTH, "application/json"),
    "deep-objects": (b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, "application/json"),
    "deep-but-parseable": (
        b'{"item_id": "postgresql-standard", "inputs": {"a": ' + b"[" * 900 + b"]" * 900 + b"}}",
        "application/json",
    ),
    "deep-in-a-field": (
        b'{"item_id": "postgresql-standard", "inputs": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
        "application/json",
    ),
    "huge-string": (
        json.dumps({"item_id": "x" * 900_000, "reason": "y" * 100_000}).encode(),
        "application/json",
    ),
    "over-the-limit": (json.dumps({"item_id": "x" * 1_100_000}).encode(), "application/json"),
    "invalid-utf8": (b'{"item_id": "\xff\xfe\xfd", "reason": "\xc3\x28"}', "application/json"),
    "raw-nul": (b'{"item_id": "post\x00gres"}', "application/json"),
    "escaped-nul": (
        b'{"item_id": "postgresql-standard\\u0000", "reason": "a\\u0000b", "comment": "\\u0000",'
        b' "inputs": {"db_name": "a\\u0000"}, "mode": "manual", "template": "\\u0000"}',
        "application/json",
    ),
    "escaped-nul-in-a-key": (b'{"inputs": {"a\\u0000": 1}}', "application/json"),
    "lone-surrogate": (b'{"item_id": "\\ud800", "reason": "\\udfff\\ud800"}', "application/json"),
    "text-plain": (b'{"item_id": "postgresql-standard"}', "text/plain"),
    "form": (b"item_id=postgresql-standard", "application/x-www-form-urlencoded"),
    "xml": (b"<item_id>postgresql-standard</item_id>", "application/xml"),
    "content-type-junk": (b"{}", "application/json; charset=nonsense"),
    "duplicate-keys": (
        b'{"item_id": "postgresql-standard", "item_id": "sqs-queue", "inputs": {}, "inputs": {}}',
        "application/json",
    ),
    "huge-number": (
        b'{"item_id": "postgresql-standard", "inputs": {"n": 1e999}}',
        "application/json",
    ),
    "infinity": (b'{"item_id": "postgresql-standard", "reason": -Infinity}', "application/json"),
    "nan": (b'{"item_id": "postgresql-standard", "inputs": {"n": NaN}}', "application/json"),
    "huge-integer": (
        b'{"item_id": "postgresql-standard", "inputs": {"n": ' + b"9" * 5_000 + b"}}",
        "application/json",
    ),
    "empty": (b"", "application/json"),
    "empty-no-type": (b"", ""),
    "whitespace": (b"  \n\t ", "application/json"),
    "bom": (b'\xef\xbb\xbf{"item_id": "postgresql-standard"}', "application/json"),
}
#: A UTF-8 byte order mark may be skipped (RFC 8259, section 8.1): the body then is fine JSON.
_MAY_SUCCEED = {"bom"}
_POSTS = _operations("post")


def _concrete(path: str) -> str:
    return (
        path.replace("{item_id}", "postgresql-standard")
        .replace("{request_id}", UNKNOWN_REQUEST)
        .replace("{resource_id}", UNKNOWN_RESOURCE)
    )


def _post(base_url: str, path: str, body: bytes, content_type: str) -> requests.Response:
    url = f"{base_url}{_concrete(path)}"
    headers = {"Content-Type": content_type} if content_type else {}
    if _signed("POST", path):
        headers = sign(DANA, "POST", url, body, headers)
    return requests.post(url, data=body, headers=headers, timeout=30)


def _failures(checks: dict[str, Callable[[], None]]) -> list[str]:
    """The name and message of every check that fails; all are run."""
    failed = []
    for name, check in checks.items():
        try:
            check()
        except AssertionError as exc:
            failed.append(f"{name}: {exc}")
    return failed


def _hostile_bodies(base_url: str, path: str) -> list[str]:
    def check(shape: str) -> None:
        body, content_type = HOSTILE_BODIES[shape]
        response = _post(base_url, path, body, content_type)
        assert_answer_is_sound("POST", path, Answer.of(response))
        # The item validator reports on any text with a 200; an operation that takes no body
        # is right to accept an empty one.
        takes_no_body = "requestBody" not in DOC["paths"][path]["post"]
        may_succeed = _MAY_SUCCEED | ({"empty", "empty-no-type"} if takes_no_body else set())
        if path != f"{PREFIX}/validate/catalog-item" and shape not in may_succeed:
            assert 400 <= response.status_code < 500, response.text[:300]

    return _failures({shape: functools.partial(check, shape) for shape in HOSTILE_BODIES})


@pytest.mark.parametrize("op", _POSTS, ids=_op_id)
async def test_hostile_bodies_get_a_documented_4xx(gateway: str, op: tuple[str, str]) -> None:
    failed = await asyncio.to_thread(_hostile_bodies, gateway, op[1])
    assert not failed, "\n".join(failed)


# Unsigned and badly signed calls: 401 or 403, with the envelope, on every signed operation.


def _refused(base_url: str, method: str, path: str, how: str) -> requests.Response:
    url = f"{base_url}{_concrete(path)}"
    body = b'{"reason": "a fine reason"}' if method == "POST" else b""
    headers = {"Content-Type": "application/json"}
    if how == "unsigned":
        pass
    elif how == "wrong-secret":
        wrong = Target("", "us-east-1", ReadOnlyCredentials(TEST_KEY_ID, "not-the-secret", None))
        headers = sign(wrong, method, url, body, headers)
    elif how == "unknown-key":
        unknown = Target("", "us-east-1", ReadOnlyCredentials("PAONOSUCHKEY00000001", "x", None))
        headers = sign(unknown, method, url, body, headers)
    elif how == "other-region":
        headers = sign(Target("", "eu-west-3", DANA.credentials), method, url, body, headers)
    elif how == "body-changed":
        headers = sign(DANA, method, url, body, headers)
        body = body + b" "
    elif how == "payload-hash-lies":
        headers = sign(DANA, method, url, body, headers)
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"other").hexdigest()
    elif how == "path-changed":
        headers = sign(DANA, method, url + "x", body, headers)
    elif how == "stale":
        headers = _stale(method, url, body, headers)
    elif how == "garbage-authorization":
        headers["Authorization"] = "AWS4-HMAC-SHA256 nonsense"
        headers["X-Amz-Date"] = "yesterday"
    elif how == "basic-authorization":
        headers["Authorization"] = "Basic ZGFuYTpzZWNyZXQ="
    return requests.request(method, url, data=body, headers=headers, timeout=10)


def _stale(method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """Headers signed correctly but two hours ago, beyond the allowed clock skew."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    stamp = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = stamp
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(TEST_KEY_ID, TEST_SECRET), "execute-api", "us-east-1")
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return dict(request.headers.items())


REFUSALS = (
    "unsigned",
    "wrong-secret",
    "unknown-key",
    "other-region",
    "body-changed",
    "payload-hash-lies",
    "path-changed",
    "stale",
    "garbage-authorization",
    "basic-authorization",
)
#: Ways to refuse that only a call with a body can show.
_BODY_REFUSALS = {"body-changed", "payload-hash-lies"}
_SIGNED_OPS = [op for op in _operations() if _signed(*op)]


def _refusals(base_url: str, method: str, path: str) -> list[str]:
    def check(how: str) -> None:
        response = _refused(base_url, method, path, how)
        assert response.status_code in (401, 403), response.text[:300]
        assert_answer_is_sound(method, path, Answer.of(response))

    ways = [how for how in REFUSALS if method == "POST" or how not in _BODY_REFUSALS]
    return _failures({how: functools.partial(check, how) for how in ways})


@pytest.mark.parametrize("op", _SIGNED_OPS, ids=_op_id)
async def test_unsigned_or_badly_signed_calls_are_refused(
    gateway: str, op: tuple[str, str]
) -> None:
    failed = await asyncio.to_thread(_refusals, gateway, *op)
    assert not failed, "\n".join(failed)


# Hostile path ids: ids no catalog, request or resource can have name nothing (404), never a 5xx.

HOSTILE_IDS = {
    "nul": "a%00b",
    "invalid-utf8": "%FF%FE",
    "lone-surrogate": "%ED%A0%80",
    "dot-dot": "..%2F..%2Fetc",
    "long": "a" * 2_000,
    "unicode": "%E2%80%AE%F0%9F%92%A5",
    "spaces": "%20%09%0A",
}
_WITH_IDS = [op for op in _operations() if "{" in op[1]]


def _call_with_id(base_url: str, method: str, path: str, raw_id: str) -> requests.Response:
    url = base_url + re.sub(r"\{[a-z_]+\}", raw_id, path)
    body = b'{"reason": "a fine reason"}' if method == "POST" else b""
    headers = sign(DANA, method, url, body, {"Content-Type": "application/json"})
    return requests.request(method, url, data=body, headers=headers, timeout=10)


def _hostile_ids(base_url: str, method: str, path: str) -> list[str]:
    def check(shape: str) -> None:
        response = _call_with_id(base_url, method, path, HOSTILE_IDS[shape])
        assert 400 <= response.status_code < 500, response.text[:300]
        assert_answer_is_sound(method, path, Answer.of(response))

    return _failures({shape: functools.partial(check, shape) for shape in HOSTILE_IDS})


@pytest.mark.parametrize("op", _WITH_IDS, ids=_op_id)
async def test_hostile_path_ids_get_a_documented_4xx(gateway: str, op: tuple[str, str]) -> None:
    failed = await asyncio.to_thread(_hostile_ids, gateway, *op)
    assert not failed, "\n".join(failed)


# The webhook, configured: a payload with a valid HMAC is still checked like any body.

WEBHOOK_SECRET = "fuzz-webhook-secret"
HOSTILE_PUSHES = {
    "array": b"[]",
    "string": b'"refs/heads/main"',
    "null": b"null",
    "deep": b"[" * DEPTH + b"]" * DEPTH,
    "duplicate-keys": b'{"ref": "refs/heads/x", "ref": "refs/heads/main"}',
    "not-json": b"{ref: main",
}


@pytest_asyncio.fixture(loop_scope="session")
async def webhook_gateway(
    settings: Settings, keys: KeyStore, pool: asyncpg.Pool, catalog_parts: CatalogParts
) -> AsyncIterator[str]:
    """The gateway with a GitHub webhook secret configured; yields its base URL."""
    from pao.gateway.app import create_app

    configured = settings.model_copy(update={"github_webhook_secret": WEBHOOK_SECRET})
    app = create_app(configured, keys=keys, pool=pool, catalog_parts=catalog_parts)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


def _push(base_url: str, body: bytes) -> requests.Response:
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}
    url = f"{base_url}{PREFIX}/webhooks/github"
    return requests.post(url, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("shape", list(HOSTILE_PUSHES))
async def test_a_hostile_push_with_a_valid_hmac_is_a_400(webhook_gateway: str, shape: str) -> None:
    response = await asyncio.to_thread(_push, webhook_gateway, HOSTILE_PUSHES[shape])
    assert response.status_code == 400, response.text[:300]
    assert_answer_is_sound("POST", f"{PREFIX}/webhooks/github", Answer.of(response))


async def test_a_push_naming_its_pusher_oddly_still_refreshes(webhook_gateway: str) -> None:
    body = json.dumps({"ref": "refs/heads/main", "pusher": "dana"}).encode()
    response = await asyncio.to_thread(_push, webhook_gateway, body)
    assert response.status_code == 200, response.text[:300]
    assert_answer_is_sound("POST", f"{PREFIX}/webhooks/github", Answer.of(response))
