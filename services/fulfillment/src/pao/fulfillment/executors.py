"""Executors: what each action type does against the outside world, with errors classified.

Every failure becomes an ActionError saying whether it is transient (retry later) or permanent
(fail the action), so the worker treats JIRA, Terraform and REST calls alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pao.fulfillment.jira import JiraClient, JiraError, JiraIssue
from pao.fulfillment.terraform import TerraformError, TerraformRunner
from pao.spec.problems import value_at

DEFAULT_REJECTED = ("Rejected", "Won't Do", "Declined")


class ActionError(Exception):
    """An action's call failed: transient errors are retried, permanent ones fail the action."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


def idempotency_label(request_id: str, action: str, generation: int = 0) -> str:
    """The label that finds an action's JIRA issue again, so a resumed job never opens a
    second one; a retried action (a new generation) gets a new issue."""
    suffix = f"-r{generation}" if generation else ""
    return f"pao-{request_id}-{action}{suffix}".replace("_", "-")


@dataclass(frozen=True)
class JiraSettings:
    correlation_field: str | None = None


class JiraExecutor:
    """Opens an action's issue (once), reads it, and writes comments and priorities."""

    system = "jira"

    def __init__(self, client: JiraClient, settings: JiraSettings) -> None:
        self._client = client
        self._settings = settings

    async def open_issue(
        self,
        spec: dict[str, Any],
        *,
        request_id: str,
        action: str,
        correlation_id: str | None,
        generation: int = 0,
    ) -> JiraIssue:
        """The action's issue: found by its label if it already exists, else created."""
        label = idempotency_label(request_id, action, generation)
        try:
            existing = await self._client.find_issue_by_label(label)
            if existing is not None:
                return existing
            fields: dict[str, Any] = {
                "project": {"key": spec["project"]},
                "issuetype": {"name": spec["issue_type"]},
                "summary": spec["summary"],
                "labels": [*dict.fromkeys([*(spec.get("labels") or []), "pao", label])],
            }
            if spec.get("description"):
                fields["description"] = spec["description"]
            if spec.get("priority"):
                fields["priority"] = {"name": spec["priority"]}
            if spec.get("components"):
                fields["components"] = [{"name": c} for c in spec["components"]]
            fields.update(spec.get("fields") or {})
            if self._settings.correlation_field and correlation_id:
                fields[self._settings.correlation_field] = correlation_id
            return await self._client.create_issue(fields)
        except JiraError as exc:
            raise _from_jira(exc) from exc

    async def read(self, key: str) -> JiraIssue:
        try:
            return await self._client.get_issue(key)
        except JiraError as exc:
            raise _from_jira(exc) from exc

    async def update(self, key: str, *, comment: str, priority: str | None = None) -> None:
        try:
            if priority:
                await self._client.set_priority(key, priority)
            await self._client.add_comment(key, comment)
        except JiraError as exc:
            raise _from_jira(exc) from exc


def _from_jira(exc: JiraError) -> ActionError:
    return ActionError(f"JIRA: {exc.message}", transient=exc.transient, retry_after=exc.retry_after)


class TerraformExecutor:
    """Applies an action's module with its variables, one workspace per request and action."""

    system = "terraform"

    def __init__(self, runner: TerraformRunner, catalog_root: Path) -> None:
        self._runner = runner
        self._catalog_root = catalog_root

    async def apply(self, spec: dict[str, Any], *, request_id: str, action: str) -> dict[str, Any]:
        module = spec["module"]
        if module.startswith("git::"):
            raise ActionError(
                "git module sources are not supported by this installation", transient=False
            )
        workspace = f"{spec.get('workspace') or 'default'}-{request_id[:8]}-{action}"
        try:
            return await self._runner.apply(
                self._catalog_root / module,
                spec.get("variables") or {},
                workspace=workspace,
                outputs=spec.get("outputs") or (),
            )
        except TerraformError as exc:
            raise ActionError(f"Terraform: {exc}", transient=exc.transient) from exc


class RestExecutor:
    """Calls an HTTP API and records values of its JSON answer."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @staticmethod
    def system_of(spec: dict[str, Any]) -> str:
        from urllib.parse import urlsplit

        return f"rest:{urlsplit(str(spec.get('url', ''))).netloc}"

    async def call(self, spec: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        body = spec.get("body")
        headers = {"Idempotency-Key": idempotency_key, **(spec.get("headers") or {})}
        kwargs: dict[str, Any] = {}
        if isinstance(body, str):
            kwargs["data"] = body.encode()
        elif body is not None:
            kwargs["json"] = body
        try:
            async with self._session.request(
                spec["method"], spec["url"], headers=headers, timeout=self._timeout, **kwargs
            ) as response:
                text = await response.text()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ActionError(
                f"{spec['method']} {spec['url']}: {type(exc).__name__}", transient=True
            ) from exc
        expected = spec.get("expected_status") or [200, 201, 202, 204]
        if status not in expected:
            transient = status == 429 or status >= 500
            raise ActionError(
                f"{spec['method']} {spec['url']} answered {status}",
                transient=transient,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        outputs: dict[str, Any] = {"status_code": status}
        pointers = spec.get("outputs") or {}
        if pointers:
            try:
                document = json.loads(text) if text else None
            except ValueError as exc:
                raise ActionError(
                    "the answer is not JSON; outputs cannot be read", transient=False
                ) from exc
            for name, pointer in pointers.items():
                outputs[name] = value_at(document, pointer)
        return outputs
