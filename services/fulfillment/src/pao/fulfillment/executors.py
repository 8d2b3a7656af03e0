"""Executors: what each action type does against the outside world, with errors classified.

Every action type has one executor behind the same protocol: `system_of` names the system a
spec calls (one breaker each), `run` does the work and says how it ended, a finished call with
outputs or a ticket now open for people. Every failure becomes an ActionError saying whether it
is transient (retry later) or permanent (fail the action), so the worker treats JIRA, Terraform
and REST calls alike. The REST executor has its own module, `rest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import asyncpg
import structlog

from pao.fulfillment.definitions import Definitions
from pao.fulfillment.jira import JiraClient, JiraError, JiraIssue, account_of
from pao.fulfillment.modules import ModuleCache, ModuleUnavailable
from pao.fulfillment.terraform import TerraformError, TerraformRunner
from pao.fulfillment.tickets import Tickets

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
    """Opens an action's issue (once), reads it, and writes comments and priorities.

    A run adopts only an issue PAO opened for it: the one whose key it recorded, or, after a
    stop between JIRA's answer and that record, the oldest carrying the run's own random label
    in the action's project, filed by PAO's account when PAO has one (see
    `pao.fulfillment.tickets`). Anything else is someone else's and is ignored.
    """

    def __init__(self, client: JiraClient, settings: JiraSettings, tickets: Tickets) -> None:
        self._client = client
        self._settings = settings
        self._tickets = tickets
        self._account: str | None = None
        self._account_known = False

    def system_of(self, spec: dict[str, Any]) -> str:
        return "jira"

    async def run(self, spec: dict[str, Any], key: RunKey) -> Outcome:
        issue = await self.open_issue(spec, key)
        return TicketOpen(issue.key, issue.url)

    async def open_issue(self, spec: dict[str, Any], key: RunKey) -> JiraIssue:
        """The run's issue: the one it recorded or, resumed after a stop, left; else created."""
        project = spec["project"]
        try:
            opening = await self._tickets.begin(
                key.request_id, key.action, key.generation, project=project
            )
        except (asyncpg.PostgresError, OSError) as exc:
            raise ActionError(
                f"the opening of the issue cannot be recorded now: {exc}", transient=True
            ) from exc
        try:
            if opening.issue_key is not None:
                return await self._client.get_issue(opening.issue_key)
            issue = None
            if opening.resumed:
                issue = await self._left_by_earlier_attempt(opening.label, project)
            if issue is None:
                issue = await self._client.create_issue(self._fields(spec, key, opening.label))
        except JiraError as exc:
            raise _from_jira(exc) from exc
        try:
            await self._tickets.opened(key.request_id, key.action, key.generation, issue.key)
        except (asyncpg.PostgresError, OSError) as exc:
            # The next attempt finds the issue by the run's own label, in the project.
            raise ActionError(
                f"{issue.key} was opened but cannot be recorded now: {exc}", transient=True
            ) from exc
        return issue

    def _fields(self, spec: dict[str, Any], key: RunKey, own_label: str) -> dict[str, Any]:
        labels = [*(spec.get("labels") or []), "pao", key.label, own_label]
        fields: dict[str, Any] = {
            "project": {"key": spec["project"]},
            "issuetype": {"name": spec["issue_type"]},
            "summary": spec["summary"],
            "labels": [*dict.fromkeys(labels)],
        }
        if spec.get("description"):
            fields["description"] = spec["description"]
        if spec.get("priority"):
            fields["priority"] = {"name": spec["priority"]}
        if spec.get("components"):
            fields["components"] = [{"name": c} for c in spec["components"]]
        fields.update(spec.get("fields") or {})
        if self._settings.correlation_field and key.correlation_id:
            fields[self._settings.correlation_field] = key.correlation_id
        return fields

    async def _pao_account(self) -> str | None:
        """PAO's own JIRA account, asked once; None when PAO calls without credentials (JIRA
        then answers for an anonymous or shared user, whose issues anyone could file) or JIRA
        takes it for no one. Without an account, the run's own label is the only proof."""
        if not self._account_known and not self._client.authenticated:
            self._account, self._account_known = None, True
        if not self._account_known:
            try:
                self._account = account_of(await self._client.myself())
            except JiraError as exc:
                if exc.transient:
                    raise
                log.warning("JIRA does not say which account PAO is", error=exc.message)
                self._account = None
            self._account_known = True
        return self._account

    async def _left_by_earlier_attempt(self, own_label: str, project: str) -> JiraIssue | None:
        """The oldest issue with the run's own label in the project (filed by PAO's account,
        when PAO has one)."""
        account = await self._pao_account()
        for issue in await self._client.find_issues_by_label(own_label):
            filed_by = {issue.creator, issue.reporter} - {None}
            if issue.project == project and (account is None or filed_by == {account}):
                return issue
            log.warning(
                "an issue carries the run's own label but PAO did not open it; ignored",
                issue=issue.key,
                project=issue.project,
                expected_project=project,
                filed_by=sorted(filed_by),
                pao_account=account,
            )
        return None

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


def _module_in_catalog(catalog_root: Path, module: str) -> Path:
    """The catalog folder of a local module; refused when the path (or a link on it) leaves
    the catalog, since the module's code runs on the worker."""
    relative = PurePosixPath(module)
    inside = not relative.is_absolute() and ".." not in relative.parts and bool(relative.parts)
    folder = catalog_root.joinpath(*relative.parts)
    if not inside or not folder.resolve().is_relative_to(catalog_root.resolve()):
        raise ActionError(
            f"module {module} is outside the catalog: a module path names a folder under the "
            "catalog root (modules/...), without .., absolute paths or links out",
            transient=False,
        )
    return folder


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
        if not module.startswith("git::"):
            _module_in_catalog(self._catalog_root, module)
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
        return _module_in_catalog(self._catalog_root, module)

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
