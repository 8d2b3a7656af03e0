"""A JIRA REST v2 client: the issues manual actions file, follow and close."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from opentelemetry.trace import Span, SpanKind

from pao.fulfillment.retry_after import retry_after as wait_asked
from pao.shared import tracing

_ISSUE_FIELDS = "summary,status,priority,labels,description,project,creator,reporter"
_COMMENT_PAGE = 100
_LABEL_MATCHES = 50


class JiraError(Exception):
    """A JIRA call that failed; `transient` says whether trying again later may succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class JiraIssue:
    """What PAO needs to know about one issue."""

    key: str
    id: str
    url: str
    summary: str
    status: str
    status_category: str
    priority: str | None
    labels: tuple[str, ...]
    description: str | None
    project: str = ""
    #: the account that created the issue, and the one it names as reporter (see `account_of`)
    creator: str | None = None
    reporter: str | None = None


def account_of(user: Any) -> str | None:
    """A JIRA user's stable identity: the Cloud accountId, else the Data Center key or name."""
    if not isinstance(user, dict):
        return None
    for field in ("accountId", "key", "name"):
        if user.get(field):
            return str(user[field])
    return None


def _error_details(body: bytes) -> str:
    """Jira's errorMessages and field errors, or the start of whatever else it answered."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:300]
    if not isinstance(payload, dict):
        return str(payload)[:300]
    parts = [str(m) for m in payload.get("errorMessages") or []]
    errors = payload.get("errors") or {}
    if isinstance(errors, dict):
        parts += [f"{field}: {text}" for field, text in errors.items()]
    return "; ".join(parts) or str(payload)[:300]


def _jql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class JiraClient:
    """Calls one JIRA server's REST v2 API over a shared aiohttp session."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession,
        username: str | None = None,
        token: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Accept": "application/json"}
        if username and token:
            credentials = base64.b64encode(f"{username}:{token}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {credentials}"
        elif token:
            self._headers["Authorization"] = f"Bearer {token}"

    @property
    def authenticated(self) -> bool:
        """Whether calls carry credentials (without, JIRA takes PAO for whoever it lets in)."""
        return "Authorization" in self._headers

    def browse_url(self, key: str) -> str:
        """The issue's page for people."""
        return f"{self.base_url}/browse/{key}"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = f"{self.base_url}{path}"
        with tracing.span(f"JIRA {method}", kind=SpanKind.CLIENT) as span:
            if span.is_recording():
                span.set_attributes(
                    {"http.request.method": method, "url.full": tracing.shown_url(url)}
                )
            return await self._exchange(span, method, url, path, body, params)

    async def _exchange(
        self,
        span: Span,
        method: str,
        url: str,
        path: str,
        body: Any,
        params: dict[str, str] | None,
    ) -> Any:
        """One call and its decoded answer; every failure a JiraError."""
        what = f"JIRA {method} {path}"
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                params=params,
                headers=tracing.outgoing(self._headers),
                timeout=self._timeout,
            ) as response:
                payload = await response.read()
                status = response.status
                span.set_attribute("http.response.status_code", status)
                retry_after = wait_asked(response.headers.get("Retry-After"))
        except TimeoutError:
            raise JiraError(f"{what} timed out", transient=True) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise JiraError(
                f"{what} failed: cannot reach {self.base_url} ({type(exc).__name__}: {exc})",
                transient=True,
            ) from None
        except aiohttp.ClientError as exc:
            raise JiraError(f"{what} failed: {type(exc).__name__}: {exc}") from None
        if status >= 400:
            transient = status >= 500 or status == 429
            raise JiraError(
                f"{what} answered {status}: {_error_details(payload)}",
                status=status,
                transient=transient,
                retry_after=retry_after if transient else None,
            )
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise JiraError(
                f"{what} answered {status} with a body that is not JSON", status=status
            ) from None

    def _issue(self, raw: dict[str, Any]) -> JiraIssue:
        fields = raw.get("fields") or {}
        status = fields.get("status") or {}
        priority = fields.get("priority") or {}
        return JiraIssue(
            key=raw["key"],
            id=str(raw.get("id", "")),
            url=self.browse_url(raw["key"]),
            summary=fields.get("summary") or "",
            status=status.get("name", ""),
            status_category=(status.get("statusCategory") or {}).get("key", ""),
            priority=priority.get("name"),
            labels=tuple(fields.get("labels") or ()),
            description=fields.get("description"),
            project=str((fields.get("project") or {}).get("key", "")),
            creator=account_of(fields.get("creator")),
            reporter=account_of(fields.get("reporter")),
        )

    async def create_issue(self, fields: dict[str, Any]) -> JiraIssue:
        """Create an issue from Jira `fields` (project, issuetype, summary...); read it back."""
        created = await self._call("POST", "/rest/api/2/issue", body={"fields": fields})
        return await self.get_issue(created["key"])

    async def get_issue(self, key: str) -> JiraIssue:
        """The issue as Jira has it now."""
        raw = await self._call("GET", f"/rest/api/2/issue/{key}", params={"fields": _ISSUE_FIELDS})
        return self._issue(raw)

    async def find_issues_by_label(self, label: str) -> list[JiraIssue]:
        """Issues carrying `label` in any project, oldest first (the first fifty)."""
        result = await self._call(
            "GET",
            "/rest/api/2/search",
            params={
                "jql": f"labels = {_jql_string(label)} ORDER BY created ASC",
                "fields": _ISSUE_FIELDS,
                "maxResults": str(_LABEL_MATCHES),
            },
        )
        return [self._issue(raw) for raw in (result or {}).get("issues") or []]

    async def add_comment(self, key: str, body: str) -> None:
        """Add a comment to the issue."""
        await self._call("POST", f"/rest/api/2/issue/{key}/comment", body={"body": body})

    async def comments(self, key: str) -> list[str]:
        """The issue's comment bodies, oldest first."""
        found: list[dict[str, Any]] = []
        while True:
            page = await self._call(
                "GET",
                f"/rest/api/2/issue/{key}/comment",
                params={"startAt": str(len(found)), "maxResults": str(_COMMENT_PAGE)},
            )
            batch = page.get("comments") or []
            found += batch
            if not batch or len(found) >= int(page.get("total", 0)):
                break
        # Comment ids grow with time; servers differ in the order they list comments.
        found.sort(key=lambda c: int(c["id"]) if str(c.get("id", "")).isdigit() else 0)
        return [str(c.get("body", "")) for c in found]

    async def set_priority(self, key: str, name: str) -> None:
        """Set the issue's priority by name."""
        await self._call(
            "PUT", f"/rest/api/2/issue/{key}", body={"fields": {"priority": {"name": name}}}
        )

    async def myself(self) -> dict[str, Any]:
        """The user JIRA takes these credentials for (401 when it takes them for no one)."""
        answer: dict[str, Any] = await self._call("GET", "/rest/api/2/myself")
        return answer

    async def project(self, key: str) -> dict[str, Any]:
        """A project with its issue types (404 when there is no such project)."""
        answer: dict[str, Any] = await self._call(
            "GET", f"/rest/api/2/project/{quote(key, safe='')}"
        )
        return answer

    async def project_statuses(self, key: str) -> list[dict[str, Any]]:
        """Each issue type of a project, with the statuses its workflow has."""
        answer: list[dict[str, Any]] = await self._call(
            "GET", f"/rest/api/2/project/{quote(key, safe='')}/statuses"
        )
        return answer

    async def fields(self) -> list[dict[str, Any]]:
        """Every field, system and custom, with its id and name."""
        answer: list[dict[str, Any]] = await self._call("GET", "/rest/api/2/field")
        return answer

    async def transition_to(self, key: str, status_name: str) -> None:
        """Move the issue to the status named `status_name`; nothing to do if it is there."""
        offered = await self._call("GET", f"/rest/api/2/issue/{key}/transitions")
        transitions = (offered or {}).get("transitions") or []
        wanted = status_name.casefold()
        for transition in transitions:
            if str((transition.get("to") or {}).get("name", "")).casefold() == wanted:
                await self._call(
                    "POST",
                    f"/rest/api/2/issue/{key}/transitions",
                    body={"transition": {"id": str(transition["id"])}},
                )
                return
        issue = await self.get_issue(key)
        if issue.status.casefold() == wanted:
            return
        reachable = ", ".join(sorted({str((t.get("to") or {}).get("name")) for t in transitions}))
        raise JiraError(
            f"{key} cannot move from {issue.status!r} to {status_name!r}; "
            f"the workflow offers: {reachable or 'nothing'}"
        )
