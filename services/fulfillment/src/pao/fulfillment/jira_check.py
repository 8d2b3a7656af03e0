"""`pao jira check`: does the configured JIRA have what the catalog's manual actions need?

One line per check, each failure with a fix: the server answers and takes PAO's credentials;
every project and issue type the items name exists; the correlation-id field exists; each
workflow has a done status (PAO completes an action when its ticket reaches one) and the statuses
items reject with. Transitions are not checked: JIRA lists them only for an existing issue, and
PAO moves no ticket itself (people do), so the statuses a workflow has are what can be known.
Projects and issue types given as templates are only known when a request renders them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pao.fulfillment.executors import DEFAULT_REJECTED
from pao.fulfillment.jira import JiraClient, JiraError
from pao.spec.catalog import read_directory

Outcome = Literal["ok", "fail", "warn", "skip"]


@dataclass(frozen=True)
class Check:
    """One verdict: `fix` says what to do when it is not ok."""

    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class JiraAction:
    """A `jira` block of an item: an action's, or its manual fallback's."""

    item: str
    where: str
    project: str
    issue_type: str
    rejected_statuses: tuple[str, ...] | None


@dataclass
class CatalogJiraUse:
    """What a catalog's items ask of JIRA."""

    actions: list[JiraAction] = field(default_factory=list)

    def literal(self) -> list[JiraAction]:
        return [a for a in self.actions if not templated(a.project)]

    def projects(self) -> dict[str, list[str]]:
        """Project key -> the items that file into it."""
        found: dict[str, set[str]] = defaultdict(set)
        for action in self.literal():
            found[action.project].add(action.item)
        return {key: sorted(items) for key, items in sorted(found.items())}


def templated(value: str) -> bool:
    return "{{" in value or "{%" in value


def _jira_blocks(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "jira" and isinstance(value, dict) and "project" in value:
                yield path, value
            else:
                yield from _jira_blocks(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _jira_blocks(value, f"{where}[{index}]")


def catalog_jira_use(root: Path) -> CatalogJiraUse:
    """Every `jira` block (actions, fallback, teardown) of the items under a catalog folder."""
    use = CatalogJiraUse()
    for file in read_directory(root):
        try:
            document = yaml.safe_load(file.text)
        except yaml.YAMLError:
            continue  # an unreadable item is the catalog validator's to report
        if not isinstance(document, dict) or document.get("kind") != "CatalogItem":
            continue
        item = str((document.get("metadata") or {}).get("id") or file.path)
        for where, block in _jira_blocks(document, ""):
            rejected = block.get("rejected_statuses")
            use.actions.append(
                JiraAction(
                    item=item,
                    where=where,
                    project=str(block["project"]),
                    issue_type=str(block.get("issue_type", "")),
                    rejected_statuses=tuple(map(str, rejected)) if rejected else None,
                )
            )
    return use


def _items(names: list[str] | set[str]) -> str:
    return ", ".join(sorted(names))


async def check_jira(
    client: JiraClient,
    use: CatalogJiraUse,
    *,
    correlation_field: str | None,
    credentials: str,
) -> list[Check]:
    """Run every check against one JIRA; stops after the first if JIRA cannot be used at all."""
    try:
        me = await client.myself()
    except JiraError as exc:
        if exc.status in (401, 403):
            fix = (
                "set PAO_JIRA_USERNAME and the API token (PAO_JIRA_TOKEN, or the secret "
                "PAO_JIRA_TOKEN_SECRET names: `pao secrets init`)"
            )
        else:
            fix = "check PAO_JIRA_URL and that JIRA is up and reachable from here"
        return [Check("connection", "fail", f"{exc.message} ({credentials})", fix)]
    user = me.get("displayName") or me.get("name") or "?"
    checks = [Check("connection", "ok", f"{client.base_url} answers as {user} ({credentials})")]
    checks += [
        Check(
            f"templated {a.item}",
            "skip",
            f"{a.where}.project is a template ({a.project!r}): checked when a request renders it",
        )
        for a in use.actions
        if templated(a.project)
    ]
    projects: dict[str, dict[str, Any]] = {}
    for key, items in use.projects().items():
        try:
            projects[key] = await client.project(key)
        except JiraError as exc:
            checks.append(
                Check(
                    f"project {key}",
                    "fail",
                    f"{exc.message}; used by {_items(items)}",
                    f"create project {key} in JIRA, or name an existing one in the items' "
                    "jira.project"
                    if exc.status == 404
                    else None,
                )
            )
            continue
        name = projects[key].get("name") or key
        checks.append(Check(f"project {key}", "ok", f"{name}; used by {_items(items)}"))
    checks += _issue_type_checks(use, projects)
    checks.append(await _correlation_check(client, correlation_field))
    for key in projects:
        checks += await _status_checks(client, key, use)
    return checks


def _issue_type_checks(use: CatalogJiraUse, projects: dict[str, dict[str, Any]]) -> list[Check]:
    wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
    checks = []
    for action in use.literal():
        if action.project not in projects:
            continue
        if templated(action.issue_type):
            checks.append(
                Check(
                    f"templated {action.item}",
                    "skip",
                    f"{action.where}.issue_type is a template: checked when a request renders it",
                )
            )
            continue
        wanted[(action.project, action.issue_type)].add(action.item)
    for (key, issue_type), items in sorted(wanted.items()):
        offered = [str(t.get("name")) for t in projects[key].get("issueTypes") or []]
        if issue_type in offered:
            checks.append(Check(f"issue type {key}/{issue_type}", "ok", f"used by {_items(items)}"))
        else:
            checks.append(
                Check(
                    f"issue type {key}/{issue_type}",
                    "fail",
                    f"project {key} has no issue type {issue_type!r} (it has: "
                    f"{', '.join(offered) or 'none'}); used by {_items(items)}",
                    f"add {issue_type!r} to the issue type scheme of {key}, or use one it has",
                )
            )
    return checks


async def _correlation_check(client: JiraClient, field_id: str | None) -> Check:
    if not field_id:
        return Check(
            "correlation field",
            "skip",
            "PAO_JIRA_CORRELATION_FIELD is empty: tickets carry the correlation id in their labels",
        )
    try:
        fields = {str(f.get("id")): f for f in await client.fields()}
    except JiraError as exc:
        return Check(f"field {field_id}", "fail", exc.message)
    if field_id in fields:
        return Check(f"field {field_id}", "ok", f"{fields[field_id].get('name')!r} exists")
    return Check(
        f"field {field_id}",
        "fail",
        f"JIRA has no field {field_id}",
        "create a text custom field and set PAO_JIRA_CORRELATION_FIELD to its id "
        "(or to nothing, to file tickets without one)",
    )


async def _status_checks(client: JiraClient, key: str, use: CatalogJiraUse) -> list[Check]:
    try:
        workflows = {str(t.get("name")): t for t in await client.project_statuses(key)}
    except JiraError as exc:
        return [Check(f"statuses {key}", "fail", exc.message)]
    actions: dict[str, list[JiraAction]] = defaultdict(list)
    for action in use.literal():
        if action.project == key and not templated(action.issue_type):
            actions[action.issue_type].append(action)
    checks = []
    for issue_type, of_type in sorted(actions.items()):
        if issue_type not in workflows:
            continue  # the issue type check already failed
        statuses = workflows[issue_type].get("statuses") or []
        names = {str(s.get("name")) for s in statuses}
        done = sorted(
            str(s.get("name"))
            for s in statuses
            if (s.get("statusCategory") or {}).get("key") == "done"
        )
        name = f"statuses {key}/{issue_type}"
        if not done:
            checks.append(
                Check(
                    name,
                    "fail",
                    "the workflow has no status in the done category",
                    "add a done-category status (PAO completes an action when its ticket "
                    "reaches one)",
                )
            )
            continue
        declared: dict[str, set[str]] = defaultdict(set)
        on_defaults: set[str] = set()
        for action in of_type:
            if action.rejected_statuses is None:
                on_defaults.add(action.item)
            for status in action.rejected_statuses or ():
                declared[status].add(action.item)
        missing = {s: items for s, items in declared.items() if s not in names}
        detail = f"done: {', '.join(done)}"
        if declared:
            detail += f"; rejected (declared): {', '.join(sorted(declared))}"
        if missing:
            checks.append(
                Check(
                    name,
                    "fail",
                    "; ".join(
                        f"no status {status!r} (rejected_statuses of {_items(items)})"
                        for status, items in sorted(missing.items())
                    ),
                    f"add the status to the workflow of {key}/{issue_type}, or drop it from "
                    "the items' rejected_statuses",
                )
            )
            continue
        if on_defaults:
            rejecting = [s for s in DEFAULT_REJECTED if s in names]
            if not rejecting:
                checks.append(
                    Check(
                        name,
                        "warn",
                        f"{detail}; none of the default rejected statuses "
                        f"({', '.join(DEFAULT_REJECTED)}) exists, so a ticket closed as "
                        f"rejected counts as done for {_items(on_defaults)}",
                        "declare the workflow's rejecting statuses in the items' "
                        "jira.rejected_statuses",
                    )
                )
                continue
            detail += f"; rejected (defaults): {', '.join(rejecting)}"
        checks.append(Check(name, "ok", detail))
    return checks
