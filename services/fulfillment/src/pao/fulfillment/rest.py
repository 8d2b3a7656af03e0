"""REST actions: one HTTP call, and for an API that finishes later, the polling of its status.

Guard rails, in the order a call meets them. Its host must be allowed, by the request's
environment (`rest_allowed_hosts` in the environments file) or else by the installation
(PAO_REST_ALLOWED_HOSTS): catalog authors choose URLs, the platform chooses where they may go. A
header value that breaks a line (an input smuggling a header) is refused for good, never retried.
The answer is read with a cap, never whole. A redirect fails the action unless it follows
redirects, and a hop to another host carries none of the call's credentials. The run's
idempotency key goes with every attempt, so an API that honours it does the work once however
often the call is retried. Errors name the method, host and path only: query strings, headers and
bodies are where secrets travel.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree

import aiohttp
import structlog
from multidict import CIMultiDict
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from pao.fulfillment.executors import ActionError, Finished, Outcome, RunKey
from pao.fulfillment.restauth import (
    AwsAccess,
    AwsTarget,
    Outgoing,
    basic_header,
    bearer_header,
    hmac_headers,
    sigv4_headers,
)
from pao.fulfillment.retry_after import retry_after
from pao.shared import tracing
from pao.spec.problems import pointer_tokens, walk
from pao.spec.validation import HTTP_TOKEN

log = structlog.get_logger(__name__)

DEFAULT_STATUS = (200, 201, 202, 204)
DEFAULT_MAX_BYTES = 1_048_576
MAX_REDIRECTS = 5
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: What a hop to another host keeps of the call's headers: nothing that may prove who calls.
KEPT_ACROSS_HOSTS = frozenset({"accept", "accept-language", "content-type", "user-agent"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def host_port(url: str) -> tuple[str, int]:
    """The URL's host (lower case) and port (the scheme's default when none is given)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port  # a bad port raises ValueError
    return host, port if port is not None else _DEFAULT_PORTS.get(parts.scheme, 0)


def host_allowed(url: str, patterns: Iterable[str]) -> bool:
    """Whether the URL's host:port matches a pattern: `api.example.com` (the scheme's default
    port), `*.example.com` (any subdomain), `host:8443`, `127.0.0.1:*`, or `*` for any host."""
    host, port = host_port(url)
    for raw in patterns:
        pattern = raw.strip().lower()
        if not pattern:
            continue
        if pattern == "*":
            return True
        wanted_host, wanted_port = _split_pattern(pattern)
        if wanted_port != "*" and str(port) != (wanted_port or str(_default_of(url))):
            continue
        if wanted_host == host or (wanted_host.startswith("*.") and host.endswith(wanted_host[1:])):
            return True
    return False


def _default_of(url: str) -> int:
    return _DEFAULT_PORTS.get(urlsplit(url).scheme, 0)


def _split_pattern(pattern: str) -> tuple[str, str]:
    """(host, port) of a pattern; the port is "" when the pattern names none."""
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    host, colon, port = pattern.rpartition(":")
    if colon and (port == "*" or port.isdigit()):
        return host, port
    return pattern, ""


def _place(url: str) -> str:
    """host[:port]/path of a URL: what messages may name of it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}{f':{port}' if port else ''}{parts.path or '/'}"


def _where(method: str, url: str) -> str:
    return f"{method} {_place(url)}"


def _text(value: Any) -> str:
    """A rendered value as it goes into a header, a query or a form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def xml_document(body: bytes) -> dict[str, Any]:
    """An XML answer as a dict: the root's name first, children as keys (namespaces dropped),
    repeated children as lists, leaves as strings."""
    root = ElementTree.fromstring(body)  # noqa: S314 - expat limits entity expansion; capped body
    return {_local(root.tag): _element(root)}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _element(node: ElementTree.Element) -> Any:
    children = list(node)
    if not children:
        return (node.text or "").strip()
    value: dict[str, Any] = {}
    for child in children:
        name, content = _local(child.tag), _element(child)
        if name not in value:
            value[name] = content
        elif isinstance(value[name], list):
            value[name].append(content)
        else:
            value[name] = [value[name], content]
    return value


def holds(document: Any, condition: dict[str, Any]) -> bool:
    """Whether one condition (`pointer` with `equals` or `exists`) holds on a document."""
    found, value = walk(document, pointer_tokens(str(condition["pointer"])))
    if "exists" in condition:
        return found == bool(condition["exists"])
    expected = condition.get("equals")
    if not found:
        return False
    if isinstance(value, str) != isinstance(expected, str):
        return _text(value) == _text(expected)  # XML leaves are strings
    return bool(value == expected)


def describe(condition: dict[str, Any]) -> str:
    pointer = condition["pointer"] or "the body"
    if "exists" in condition:
        return f"{pointer} {'exists' if condition['exists'] else 'does not exist'}"
    return f"{pointer} equals {json.dumps(condition.get('equals'))}"


@dataclass(frozen=True)
class Answer:
    """What one call got back (its body read up to the cap)."""

    method: str
    url: str
    status: int
    headers: CIMultiDict[str]
    body: bytes

    @property
    def where(self) -> str:
        return _where(self.method, self.url)

    def document(self, purpose: str) -> Any:
        """The body as JSON, or XML read as a dict; None when empty."""
        stripped = self.body.strip()
        if not stripped:
            return None
        kind = self.headers.get("Content-Type", "").lower()
        try:
            if "xml" in kind or (stripped[:1] == b"<" and "json" not in kind):
                return xml_document(stripped)
            return json.loads(stripped)
        except (ValueError, ElementTree.ParseError):
            raise ActionError(
                f"{self.where} answered {self.status} with a body that is neither JSON nor XML; "
                f"{purpose} cannot be read from it",
                transient=False,
            ) from None


@dataclass(frozen=True)
class _Credentials:
    """What proves who calls, and the host:port it may be shown to."""

    auth: dict[str, Any] | None
    origin: tuple[str, tuple[str, int]]
    aws: AwsTarget | None


class RestExecutor:
    """Calls an HTTP API as a REST action says (see the module docstring for its guard rails)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        environments: dict[str, dict[str, Any]] | None = None,
        allowed_hosts: Iterable[str] = (),
        aws: AwsAccess | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._session = session
        self._environments = environments or {}
        self._allowed_hosts = tuple(allowed_hosts)
        self._aws = aws or AwsAccess(region="us-east-1")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def system_of(self, spec: dict[str, Any]) -> str:
        url = str(spec.get("url") or "")
        if url.startswith("/"):
            return f"rest:aws:{(spec.get('auth') or {}).get('service', '')}"
        try:
            host, port = host_port(url)
        except ValueError:
            return "rest:"
        return f"rest:{host}:{port}"

    async def run(self, spec: dict[str, Any], key: RunKey) -> Outcome:
        env = self._environments.get(key.environment or "") or {}
        method = str(spec["method"]).upper()
        auth = spec.get("auth") or None
        url, target = self._target(spec, auth, env, method)
        idempotency = spec.get("idempotency") or {}
        extra_query = [(str(k), _text(v)) for k, v in (spec.get("query") or {}).items()]
        if idempotency.get("query"):
            extra_query.append((str(idempotency["query"]), key.label))
        url = _with_query(url, extra_query)
        body, content_type = _body(spec, key, method, url)
        headers = CIMultiDict({str(k): _text(v) for k, v in (spec.get("headers") or {}).items()})
        header = idempotency.get("header", IDEMPOTENCY_HEADER)
        if header:
            headers.setdefault(str(header), key.label)
        if content_type and body:
            headers.setdefault("Content-Type", content_type)
        if spec.get("content_md5"):
            # Some APIs (S3's bucket configuration calls) refuse a body without its digest.
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
        call = Outgoing(method, url, dict(headers), body)
        credentials = _Credentials(auth, _origin(url), target)
        statuses = _success_status(spec)
        answer = await self._exchange(call, spec, key, env, credentials, statuses)
        if answer.status not in statuses:
            raise _failure(answer)
        success = (spec.get("success") or {}).get("body") or []
        pointers = spec.get("outputs") or {}
        poll = spec.get("poll")
        document: Any = None
        if success or pointers or (poll and poll.get("url_pointer")):
            document = answer.document("its outputs and conditions")
        for condition in success:
            if not holds(document, condition):
                raise ActionError(
                    f"{answer.where} answered {answer.status} but {describe(condition)} does "
                    "not hold (success.body)",
                    transient=False,
                )
        outputs: dict[str, Any] = {"status_code": answer.status}
        outputs.update(_read_outputs(document, pointers))
        if poll:
            outputs.update(await self._poll(poll, answer, document, call, spec, key, credentials))
        return Finished(outputs)

    def _target(
        self, spec: dict[str, Any], auth: dict[str, Any] | None, env: dict[str, Any], method: str
    ) -> tuple[str, AwsTarget | None]:
        """The absolute URL of the call and, for SigV4, how its signature is scoped."""
        url = str(spec["url"])
        target = None
        if auth and auth.get("type") == "aws_sigv4":
            service = str(auth["service"])
            region = self._aws.region_of(auth, env)
            if url.startswith("/"):
                target = self._aws.target(service, region)
                if target.base_url is None:
                    raise ActionError(
                        f"{method} {urlsplit(url).path}: AWS service {service} has no standard "
                        f"endpoint in {region}; give an absolute url",
                        transient=False,
                    )
                url = target.base_url + url
            else:
                target = AwsTarget(None, region, service)
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            where = f"{method} {parts.path or '/'}" if not parts.hostname else _where(method, url)
            raise ActionError(
                f"{where}: the url must be an absolute http(s) URL (a path only with auth "
                "aws_sigv4)",
                transient=False,
            )
        if parts.username is not None or parts.password is not None:
            raise ActionError(
                f"{_where(method, url)}: credentials in the url are not sent; use auth",
                transient=False,
            )
        try:
            host_port(url)
        except ValueError:
            raise ActionError(
                f"{_where(method, url)}: the url's port is invalid", transient=False
            ) from None
        return url, target

    def _check_host(self, url: str, method: str, key: RunKey, env: dict[str, Any]) -> None:
        own = env.get("rest_allowed_hosts")
        if isinstance(own, str):
            own = [p for p in own.split(",") if p.strip()]
        patterns = own if own is not None else self._allowed_hosts
        if host_allowed(url, patterns):
            return
        host, port = host_port(url)
        shown = f"{host}:{port}"
        if own is not None:
            change = (
                f"add it to rest_allowed_hosts of environment {key.environment} in the "
                "environments file (PAO_ENVIRONMENTS_FILE)"
            )
        else:
            change = "add it to PAO_REST_ALLOWED_HOSTS" + (
                f", or to rest_allowed_hosts of environment {key.environment} in the "
                "environments file (PAO_ENVIRONMENTS_FILE)"
                if key.environment
                else ""
            )
        raise ActionError(
            f"{_where(method, url)}: host {shown} is not allowed for REST actions; {change}",
            transient=False,
        )

    async def _exchange(
        self,
        call: Outgoing,
        spec: dict[str, Any],
        key: RunKey,
        env: dict[str, Any],
        credentials: _Credentials,
        statuses: Iterable[int],
    ) -> Answer:
        """Send the call, following redirects if the action allows; the last answer."""
        limit = int(spec.get("max_response_bytes") or DEFAULT_MAX_BYTES)
        follow = bool(spec.get("follow_redirects"))
        for hop in range(MAX_REDIRECTS + 1):
            self._check_host(call.url, call.method, key, env)
            trusted = _origin(call.url) == credentials.origin
            signed = await self._authorised(call, credentials, key, env) if trusted else call
            answer = await self._send(signed, limit)
            location = answer.headers.get("Location")
            if not (300 <= answer.status < 400) or answer.status in statuses or not location:
                return answer
            target = urljoin(call.url, location)
            if not follow:
                raise ActionError(
                    f"{answer.where} answered {answer.status}, a redirect to {_place(target)}; "
                    "the action does not follow redirects (follow_redirects)",
                    transient=False,
                )
            if hop == MAX_REDIRECTS:
                break
            call = _redirected(
                call, answer.status, target, same=_origin(target) == _origin(call.url)
            )
        raise ActionError(
            f"{_where(call.method, call.url)}: more than {MAX_REDIRECTS} redirects",
            transient=False,
        )

    async def _authorised(
        self, call: Outgoing, credentials: _Credentials, key: RunKey, env: dict[str, Any]
    ) -> Outgoing:
        """The call with the headers of its auth scheme."""
        auth = credentials.auth or {}
        kind = auth.get("type")
        headers = dict(call.headers)
        if kind == "bearer":
            headers.update(bearer_header(_text(auth["token"])))
        elif kind == "basic":
            try:
                headers.update(basic_header(_text(auth["username"]), _text(auth["password"])))
            except ValueError:
                raise ActionError(
                    f"{_where(call.method, call.url)}: a basic auth username may not contain ':'",
                    transient=False,
                ) from None
        elif kind == "hmac":
            headers.update(hmac_headers(Outgoing(call.method, call.url, headers, call.body), auth))
        elif kind == "aws_sigv4" and credentials.aws is not None:
            scope = credentials.aws
            found = await self._aws.credentials(auth, key=key, env=env, region=scope.signing_region)
            headers = sigv4_headers(
                Outgoing(call.method, call.url, headers, call.body),
                found,
                service=scope.signing_name,
                region=scope.signing_region,
            )
        return Outgoing(call.method, call.url, headers, call.body)

    async def _send(self, call: Outgoing, limit: int) -> Answer:
        _check_headers(call, call.headers)
        with tracing.span(f"REST {call.method}", kind=SpanKind.CLIENT) as span:
            if span.is_recording():
                span.set_attributes(
                    {"http.request.method": call.method, "url.full": tracing.shown_url(call.url)}
                )
            answer = await self._transmit(call, limit)
            span.set_attribute("http.response.status_code", answer.status)
            if answer.status >= 400:
                span.set_status(Status(StatusCode.ERROR))
            return answer

    async def _transmit(self, call: Outgoing, limit: int) -> Answer:
        """One call on the wire (the trace context added to its headers, after any signature)."""
        try:
            async with self._session.request(
                call.method,
                URL(call.url, encoded=True),
                headers=tracing.outgoing(call.headers),
                data=call.body or None,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                body = await _read_capped(response, limit, call)
                answer = Answer(
                    call.method, call.url, response.status, CIMultiDict(response.headers), body
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The exception's text may quote the URL (and so its query): only its kind is kept.
            raise ActionError(
                f"{_where(call.method, call.url)}: {type(exc).__name__}", transient=True
            ) from None
        host, port = host_port(call.url)
        log.info(
            "REST call answered", method=call.method, host=f"{host}:{port}", status=answer.status
        )
        return answer

    async def _poll(
        self,
        poll: dict[str, Any],
        first: Answer,
        document: Any,
        call: Outgoing,
        spec: dict[str, Any],
        key: RunKey,
        credentials: _Credentials,
    ) -> dict[str, Any]:
        """Read the status URL until `until` holds; its outputs."""
        env = self._environments.get(key.environment or "") or {}
        url = _with_query(_poll_url(poll, first, document), [])
        method = str(poll.get("method") or "GET").upper()
        headers = {k: v for k, v in call.headers.items() if k.lower() != "content-type"}
        probe = Outgoing(method, url, headers, b"")
        # A status URL the action names gets the call's credentials; one the answer named gets
        # them only on the call's own host.
        if poll.get("url"):
            credentials = replace(credentials, origin=_origin(url))
        interval = float(poll.get("interval_seconds") or 2)
        timeout = float(poll.get("timeout_seconds") or 300)
        deadline = time.monotonic() + timeout
        until, fail_when = poll.get("until") or [], poll.get("fail_when") or []
        ok = range(200, 300)
        while True:
            wait = interval
            try:
                answer = await self._exchange(probe, spec, key, env, credentials, ok)
            except ActionError as exc:
                if not exc.transient:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else interval
            else:
                if answer.status in ok:
                    status = answer.document("the poll's conditions")
                    failed = next((c for c in fail_when if holds(status, c)), None)
                    if failed is not None:
                        raise ActionError(
                            f"{answer.where} reports the work failed: {describe(failed)} "
                            "(poll.fail_when)",
                            transient=False,
                        )
                    if all(holds(status, c) for c in until):
                        return _read_outputs(status, poll.get("outputs") or {})
                elif answer.status != 429 and answer.status < 500:
                    raise _failure(answer)
                told = retry_after(answer.headers.get("Retry-After"))
                if told is not None:
                    wait = told
            left = deadline - time.monotonic()
            if left <= 0:
                raise ActionError(
                    f"{_where(call.method, call.url)}: not done within {timeout:g} s "
                    f"(polling {_place(url)})",
                    transient=False,
                )
            await asyncio.sleep(min(wait, left))


def _poll_url(poll: dict[str, Any], first: Answer, document: Any) -> str:
    """The status URL: named by the action, or by the first answer's body or header; a
    relative one resolves against the call's URL."""
    if poll.get("url"):
        found: Any = poll["url"]
    elif poll.get("url_pointer"):
        present, found = walk(document, pointer_tokens(str(poll["url_pointer"])))
        if not present or not isinstance(found, str) or not found:
            raise ActionError(
                f"{first.where} answered {first.status} without a status URL at "
                f"{poll['url_pointer']} (poll.url_pointer)",
                transient=False,
            )
    else:
        name = str(poll.get("url_header") or "Location")
        found = first.headers.get(name)
        if not found:
            raise ActionError(
                f"{first.where} answered {first.status} without a {name} header (poll.url_header)",
                transient=False,
            )
    url = urljoin(first.url, str(found))
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ActionError(f"{first.where}: the status URL is not an http(s) URL", transient=False)
    return url


def _origin(url: str) -> tuple[str, tuple[str, int]]:
    return urlsplit(url).scheme, host_port(url)


def _success_status(spec: dict[str, Any]) -> tuple[int, ...]:
    status = (spec.get("success") or {}).get("status") or spec.get("expected_status")
    return tuple(int(s) for s in status) if status else DEFAULT_STATUS


def _with_query(url: str, extra: list[tuple[str, str]]) -> str:
    """The URL with its query and the extra parameters encoded strictly (as SigV4 wants)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True) + extra
    query = urlencode(pairs, quote_via=quote)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _body(spec: dict[str, Any], key: RunKey, method: str, url: str) -> tuple[bytes, str | None]:
    """The body's bytes and its default content type."""
    idempotency = spec.get("idempotency") or {}
    if spec.get("form") is not None:
        # Encoded as HTML forms (and botocore, for the AWS query protocol) do: spaces as "+".
        pairs = [(str(k), _text(v)) for k, v in spec["form"].items()]
        return urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    if "body" not in spec or spec["body"] is None:
        return b"", None
    body = spec["body"]
    pointer = idempotency.get("body_pointer")
    if pointer:
        if not isinstance(body, dict | list):
            raise ActionError(
                f"{_where(method, url)}: idempotency.body_pointer needs a JSON object body",
                transient=False,
            )
        body = _put(body, str(pointer), key.label)
    if isinstance(body, str):
        return body.encode(), None
    return json.dumps(body, separators=(",", ":")).encode(), "application/json"


def _put(document: Any, pointer: str, value: Any) -> Any:
    """A copy of the document with `value` at the pointer (missing objects made on the way)."""
    copy = json.loads(json.dumps(document))
    *path, last = pointer_tokens(pointer)
    here = copy
    try:
        for token in path:
            here = here[int(token)] if isinstance(here, list) else here.setdefault(token, {})
        if isinstance(here, list):
            here.insert(len(here) if last == "-" else int(last), value)
        else:
            here[last] = value
    except (ValueError, IndexError, AttributeError, TypeError):
        raise ActionError(
            f"idempotency.body_pointer {pointer} does not fit the body", transient=False
        ) from None
    return copy


def _check_headers(call: Outgoing, headers: dict[str, str]) -> None:
    """A header whose name is no HTTP token, or whose value breaks a line, is refused for good."""
    for name, value in headers.items():
        if not HTTP_TOKEN.fullmatch(name):
            raise ActionError(
                f"{_where(call.method, call.url)}: header name {name!r} is not an HTTP token",
                transient=False,
            )
        if any(c in value for c in "\r\n\0"):
            raise ActionError(
                f"{_where(call.method, call.url)}: the value of header {name} contains a line "
                "break (from a template or an input); refused",
                transient=False,
            )


def _redirected(call: Outgoing, status: int, target: str, *, same: bool) -> Outgoing:
    """The next hop: a 303 (and a 301/302 after a POST) becomes a GET without a body; a hop to
    another host keeps no header that may prove who calls."""
    method, body = call.method, call.body
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, body = ("HEAD" if method == "HEAD" else "GET"), b""
    headers = {
        k: v
        for k, v in call.headers.items()
        if (same or k.lower() in KEPT_ACROSS_HOSTS) and (body or k.lower() != "content-type")
    }
    return Outgoing(method, _with_query(target, []), headers, body)


async def _read_capped(response: aiohttp.ClientResponse, limit: int, call: Outgoing) -> bytes:
    """The body, read until it passes `limit` bytes at most."""
    if call.method == "HEAD":
        return b""
    body = bytearray()
    if response.content_length is None or response.content_length <= limit:
        async for chunk in response.content.iter_chunked(65_536):
            body += chunk
            if len(body) > limit:
                break
    if len(body) > limit or (response.content_length or 0) > limit:
        raise ActionError(
            f"{_where(call.method, call.url)} answered {response.status} with more than {limit} "
            "bytes (max_response_bytes)",
            transient=False,
        )
    return bytes(body)


def _read_outputs(document: Any, pointers: dict[str, str]) -> dict[str, Any]:
    return {
        name: walk(document, pointer_tokens(str(pointer)))[1] for name, pointer in pointers.items()
    }


def _failure(answer: Answer) -> ActionError:
    """The error of an unsuccessful answer: 429 and 5xx may pass, other answers will not."""
    transient = answer.status == 429 or answer.status >= 500
    return ActionError(
        f"{answer.where} answered {answer.status}",
        transient=transient,
        retry_after=retry_after(answer.headers.get("Retry-After")) if transient else None,
    )
