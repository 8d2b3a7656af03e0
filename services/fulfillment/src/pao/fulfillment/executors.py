"""Executors: what each action type does against the outside world, with errors classified.

Every action type has one executor behind the same protocol: `system_of` names the system a
spec calls (one breaker each), `run` does the work and says how it ended, a finished call with
outputs or a ticket now open for people. Every failure becomes an ActionError saying whether it
is transient (retry later) or permanent (fail the action), so the worker treats JIRA, Terraform
and REST calls alike. The REST executor has its own module, `rest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import structlog

from pao.fulfillment.definitions import Definitions
from pao.fulfillment.jira import JiraClient, JiraError, JiraIssue
from pao.fulfillment.modules import ModuleCache, ModuleUnavailable
from pao.fulfillment.terraform import TerraformError, TerraformRunner

log = structlog.get_logger(__name__)

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
class RunKey:
    """Which run an executor works for; its label keys every side effect of that run."""

    request_id: str
    action: str
    generation: int
    correlation_id: str | None = None
    #: the request's target environment (its settings scope REST hosts, AWS roles and regions)
    environment: str | None = None

    @property
    def label(self) -> str:
        return idempotency_label(self.request_id, self.action, self.generation)


@dataclass(frozen=True)
class Finished:
    """The call is done; what it produced."""

    outputs: dict[str, Any]


@dataclass(frozen=True)
class TicketOpen:
    """A ticket is open; people finish the action, and fulfilment follows the ticket."""

    key: str
    url: str


Outcome = Finished | TicketOpen


class Executor(Protocol):
    """Runs one action type's rendered spec."""

    def system_of(self, spec: dict[str, Any]) -> str:
        """The external system the spec calls: its breaker's name."""
        ...

    async def run(self, spec: dict[str, Any], key: RunKey) -> Outcome:
        """Do the action once more (a repeat finds what an earlier attempt left)."""
        ...


class Missing:
    """The executor of an action type this installation cannot run; every run fails for good."""

    def __init__(self, system: str, reason: str) -> None:
        self._system = system
        self._reason = reason

    def system_of(self, spec: dict[str, Any]) -> str:
        return self._system

    async def run(self, spec: dict[str, Any], key: RunKey) -> Outcome:
        raise ActionError(self._reason, transient=False)


@dataclass(frozen=True)
class JiraSettings:
    correlation_field: str | None = None


class JiraExecutor:
    """Opens an action's issue (once), reads it, and writes comments and priorities."""

    def __init__(self, client: JiraClient, settings: JiraSettings) -> None:
        self._client = client
        self._settings = settings

    def system_of(self, spec: dict[str, Any]) -> str:
        return "jira"

    async def run(self, spec: dict[str, Any], key: RunKey) -> Outcome:
        issue = await self.open_issue(spec, key)
        return TicketOpen(issue.key, issue.url)

    async def open_issue(self, spec: dict[str, Any], key: RunKey) -> JiraIssue:
        """The run's issue: found by its label if it already exists, else created."""
        label = key.label
        correlation_id = key.correlation_id
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
        """The issue as JIRA has it now."""
        try:
            return await self._client.get_issue(key)
        except JiraError as exc:
            raise _from_jira(exc) from exc

    async def update(self, key: str, *, comment: str, priority: str | None = None) -> None:
        """Comment on the issue, after setting a new priority if one is given."""
        try:
            if priority:
                await self._client.set_priority(key, priority)
            await self._client.add_comment(key, comment)
        except JiraError as exc:
            raise _from_jira(exc) from exc


def _from_jira(exc: JiraError) -> ActionError:
    return ActionError(f"JIRA: {exc.message}", transient=exc.transient, retry_after=exc.retry_after)


class TerraformExecutor:
    """Plans and applies an action's module in its resource's workspace (see provisioning).

    The module is the snapshot the catalog published with the item's definition (`definitions`
    gives its hash, `modules` unpacks it); a definition published before the catalog took
    snapshots runs the module from the catalog folder on disk, as before.
    """

    def __init__(
        self,
        runner: TerraformRunner,
        catalog_root: Path,
        *,
        definitions: Definitions | None = None,
        modules: ModuleCache | None = None,
    ) -> None:
        self.runner = runner
        self._catalog_root = catalog_root
        self._definitions = definitions
        self._modules = modules

    def system_of(self, spec: dict[str, Any]) -> str:
        return "terraform"

    async def module_dir(self, spec: dict[str, Any], item_hash: str | None) -> Path:
        """Where the spec's module is: its snapshot for the definition `item_hash`, unpacked
        under the runner's work root; without one, the catalog folder on disk (never for git)."""
        module = spec["module"]
        module_hash = None
        if item_hash is not None and self._definitions is not None:
            try:
                module_hash = (await self._definitions.modules(item_hash)).get(module)
            except (asyncpg.PostgresError, OSError) as exc:
                raise ActionError(
                    f"the module snapshots of {item_hash} cannot be read now: {exc}",
                    transient=True,
                ) from exc
        if module_hash is not None and self._modules is not None:
            try:
                return await self._modules.materialise(module_hash)
            except ModuleUnavailable as exc:
                raise ActionError(
                    f"module {module}: {exc.message}", transient=exc.transient
                ) from exc
        if module.startswith("git::"):
            raise ActionError(
                f"module {module} has no snapshot in the item definition {item_hash}: a git "
                "module is fetched by the catalog when it publishes the item (refresh the catalog)",
                transient=False,
            )
        log.warning(
            "no snapshot of the module in the item definition; running the catalog's copy on disk",
            module=module,
            item_hash=item_hash,
        )
        return self._catalog_root / module

    async def run(self, spec: dict[str, Any], key: RunKey) -> Outcome:
        """Apply in one go (plan and apply together), for callers without a plan step (and
        without an item definition: the module is the catalog's copy on disk)."""
        workspace = f"{spec.get('workspace') or 'default'}-{key.request_id[:8]}-{key.action}"
        try:
            outputs = await self.runner.apply(
                await self.module_dir(spec, None),
                spec.get("variables") or {},
                workspace=workspace,
                outputs=spec.get("outputs") or (),
            )
        except TerraformError as exc:
            raise ActionError(f"Terraform: {exc}", transient=exc.transient) from exc
        return Finished(outputs)
