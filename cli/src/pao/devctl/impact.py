"""`devctl catalog impact`: what a change to a catalog item touches before it is published.

The change is a local edited item file, checked offline first, compared with the item as the
server serves it now. The server serves each item at its current version only (older
definitions stay in its event store, but no endpoint returns them), so the target is always a
file; the requests and resources made with older versions are judged by the inputs they carry,
which is what a later update of them starts from (and an update is checked against the form
served then).

Judging (`assess`) is pure: a removed or retyped field that a live request or resource holds in
its inputs, a field a live input holds that the target does not declare at all (dropped in an
earlier version), and a field newly required without a default that a live one lacks, are
errors; every other change is information.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from packaging.version import InvalidVersion, Version

from pao.devctl.context import globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit, err_console
from pao.devctl.paging import rows_of

if TYPE_CHECKING:
    from pao.devctl.client import PaoClient
    from pao.spec.changes import ActionChange, FieldChange, FieldShape, ItemDiff

INVALID = "PAO-CLI-004"
#: The request statuses that are not final (the API's statuses less `requests.TERMINAL`).
IN_FLIGHT = ("submitted", "awaiting_approval", "in_progress", "awaiting_manual")
_PAGE = 500


@dataclass(frozen=True)
class LiveUse:
    """A request in flight or a resource not yet decommissioned, with the inputs it carries."""

    kind: Literal["request", "resource"]
    id: str
    item_version: str
    status: str
    owner: str
    inputs: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True)
class Finding:
    """One consequence of the change: an error stops the change, information does not."""

    level: Literal["error", "info"]
    rule: str
    subject: str
    message: str
    used_by: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "rule": self.rule,
            "subject": self.subject,
            "message": self.message,
            "used_by": list(self.used_by),
        }


def assess(diff: ItemDiff, live: Sequence[LiveUse]) -> list[Finding]:
    """The findings of a diff given what is live (pure; errors first, then in diff order)."""
    findings: list[Finding] = []
    for change in diff.fields:
        name = change.field
        holders = tuple(u.label for u in live if name in u.inputs)
        lacking = tuple(u.label for u in live if name not in u.inputs)
        if change.change == "removed":
            findings.append(
                _judged("field-removed", name, f"field {name} is removed", holders, "hold it")
            )
            continue
        if change.newly_required:
            findings.append(
                _judged(
                    "field-newly-required",
                    name,
                    f"field {name} becomes required, with no default",
                    lacking,
                    "lack it",
                )
            )
        if change.type_changed:
            kind = change.attributes["type"]
            findings.append(
                _judged(
                    "field-type-changed",
                    name,
                    f"field {name} changes type from {kind['before']} to {kind['after']}",
                    holders,
                    "hold it",
                )
            )
        # What the findings above already say is not repeated as information.
        said = {"type", "required"} if change.newly_required else {"type"}
        rest = [a for a in change.attributes if a not in said]
        if change.change == "added" and not change.newly_required:
            findings.append(Finding("info", "field-added", name, _added(change.after)))
        elif rest:
            findings.append(_changed_field(name, change, rest, live))
    for name in sorted({n for u in live for n in u.inputs} - diff.fields_after):
        if diff.change_of(name) is not None:
            continue  # removed from the served version: reported above
        holders = tuple(u.label for u in live if name in u.inputs)
        findings.append(
            Finding(
                "error",
                "field-not-in-target",
                name,
                f"field {name} is not in the target form, but requests or resources made with "
                "an earlier version hold it",
                holders,
            )
        )
    for action in diff.actions:
        findings.append(Finding("info", f"action-{action.change}", _subject(action), _what(action)))
    if (
        not diff.unchanged
        and diff.version_before
        and not older(diff.version_before, diff.version_after)
    ):
        findings.append(
            Finding(
                "info",
                "version-not-raised",
                "metadata.version",
                f"the target's version {diff.version_after} is not above the served "
                f"{diff.version_before}; requests pin an item by version, so a change needs a "
                "higher one",
            )
        )
    findings.sort(key=lambda f: f.level != "error")
    return findings


def _judged(rule: str, name: str, message: str, affected: tuple[str, ...], why: str) -> Finding:
    if affected:
        live = f"{len(affected)} live request(s) or resource(s) {why}"
        return Finding("error", rule, name, f"{message}; {live}", affected)
    return Finding("info", rule, name, f"{message}; nothing live is affected")


def _added(shape: FieldShape | None) -> str:
    assert shape is not None
    required = "required" if shape.required else "optional"
    default = "" if shape.default is None else f", default {shape.default!r}"
    return f"new {required} field ({shape.type}{default})"


def _changed_field(
    name: str, change: FieldChange, attributes: list[str], live: Sequence[LiveUse]
) -> Finding:
    parts = []
    for attribute in attributes:
        values = change.attributes[attribute]
        if attribute == "enum":
            added, removed = values["added"], values["removed"]
            parts.append(
                "enum"
                + (f" +{added}" if added else "")
                + (f" -{removed}" if removed else "")
                + ("" if added or removed else f" {values['before']} -> {values['after']}")
            )
        else:
            parts.append(f"{attribute} {values['before']!r} -> {values['after']!r}")
    # A value the enum no longer offers is refused on the next update; shown, not fatal.
    stale = tuple(
        u.label for u in live if name in u.inputs and u.inputs[name] in change.enum_removed
    )
    suffix = (
        f"; {len(stale)} live request(s) or resource(s) hold a value no longer offered"
        if stale
        else ""
    )
    return Finding("info", "field-changed", name, "; ".join(parts) + suffix, stale)


def _subject(action: ActionChange) -> str:
    return f"{action.section}.{action.action}"


def _what(action: ActionChange) -> str:
    if action.change == "added":
        return f"new {action.type_after} action"
    if action.change == "removed":
        return f"{action.type_before} action removed"
    kind = (
        f"type {action.type_before} -> {action.type_after}; "
        if action.type_before != action.type_after
        else ""
    )
    return f"{kind}changed: {', '.join(action.keys)}"


def older(version: str, than: str) -> bool:
    """Whether item version `version` comes before `than` (semantic versions)."""
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return version != than


def read_target(path: Path, item_id: str) -> dict[str, Any]:
    """The edited item in `path`, parsed and validated as CI does; a bad file is a CliError."""
    from pao.spec.validation import ITEM_KIND, validate_text

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(
            INVALID, f"cannot read {path}: {exc}", "Give a UTF-8 YAML item file", exit_code=2
        ) from exc
    report = validate_text(text, str(path))
    if report.problems:
        first = report.problems[0]
        raise CliError(
            INVALID,
            f"{path} is not a valid catalog item ({len(report.problems)} problem(s), first: "
            f"{first.format()})",
            f"Run `devctl validate catalog-item {path}` for every problem and fix them first",
            details=[
                {"field": p.pointer or None, "message": f"{p.format()}"}
                for p in report.problems[1:]
            ],
            exit_code=2,
        )
    if report.kind != ITEM_KIND or report.data is None:
        raise CliError(
            INVALID,
            f"{path} holds a {report.kind}, not a {ITEM_KIND}",
            "Give the file of one catalog item",
            exit_code=2,
        )
    if report.id != item_id:
        raise CliError(
            INVALID,
            f"{path} defines item {report.id}, not {item_id}",
            f"Run `devctl catalog impact {report.id} --file {path}`, or give {item_id}'s file",
            details=[{"field": "/metadata/id", "message": f"{report.id} is not {item_id}"}],
            exit_code=2,
        )
    return report.data


def _pages(client: PaoClient, path: str, key: str, params: dict[str, Any]) -> Iterable[dict]:
    for _, rows in rows_of(client, path, key, params=params, page_size=_PAGE):
        yield from rows


def live_uses(client: PaoClient, item_id: str) -> tuple[list[LiveUse], list[LiveUse]]:
    """The item's requests in flight (each read for its inputs), by status and oldest first,
    and its resources not yet decommissioned."""
    requests: dict[str, LiveUse] = {}
    for status in IN_FLIGHT:
        query = {"item_id": item_id, "status": status, "sort": "created_at"}
        for row in _pages(client, "/requests", "requests", query):
            if row["request_id"] in requests:
                continue  # moved on to a later status while the lists were read
            detail = client.request("GET", f"/requests/{row['request_id']}")
            if detail["status"] not in IN_FLIGHT:
                continue  # finished since it was listed
            requests[detail["request_id"]] = LiveUse(
                "request",
                detail["request_id"],
                detail["item_version"],
                detail["status"],
                detail["requester"],
                dict(detail.get("inputs") or {}),
            )
    resources = [
        LiveUse(
            "resource",
            row["resource_id"],
            row["item_version"],
            row["state"],
            row["owner"],
            dict(row.get("inputs") or {}),
        )
        for row in _pages(client, "/resources", "resources", {"item_id": item_id})
        if row["state"] != "decommissioned"
    ]
    return list(requests.values()), resources


def impact_report(
    diff: ItemDiff,
    requests: Sequence[LiveUse],
    resources: Sequence[LiveUse],
    *,
    file: str,
) -> dict[str, Any]:
    """The whole report, as `-o json` prints it."""
    findings = assess(diff, [*requests, *resources])
    target = diff.version_after

    def row(use: LiveUse) -> dict[str, Any]:
        key = "status" if use.kind == "request" else "state"
        who = "requester" if use.kind == "request" else "owner"
        return {
            f"{use.kind}_id": use.id,
            "item_version": use.item_version,
            key: use.status,
            who: use.owner,
            "older_than_target": older(use.item_version, target),
        }

    errors = [f for f in findings if f.level == "error"]
    return {
        "item_id": diff.item_id,
        "served_version": diff.version_before,
        "target_version": target,
        "target_file": file,
        "requests": [row(u) for u in requests],
        "resources": [row(u) for u in resources],
        "diff": diff.as_dict(),
        "findings": [f.as_dict() for f in findings],
        "errors": len(errors),
        "ok": not errors,
    }


def impact(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(help="The item id, e.g. sqs-queue.")],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="The edited item file (YAML): checked offline, then compared with the served "
            "item.",
            dir_okay=False,
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="A version the catalog published (see GET /catalog/items/ID/versions), "
            "compared with the served item instead of a file.",
        ),
    ] = None,
) -> None:
    """What publishing an edited item would touch: requests in flight, live resources, and the
    field-by-field diff against the served item; exits 1 when a change breaks something live.

    Examples:

      devctl catalog impact sqs-queue --file catalog/messaging/sqs-queue.yaml

      devctl -o json catalog impact sqs-queue -f catalog/messaging/sqs-queue.yaml

      devctl catalog impact sqs-queue --to 1.0.0
    """
    from pao.spec.changes import diff_items

    if (file is None) == (to is None):
        raise CliError(
            INVALID,
            "give the change to assess: --file FILE (an edited item) or --to VERSION (one the "
            "catalog published)",
            f"e.g. devctl catalog impact {item_id} --file catalog/<category>/{item_id}.yaml",
            exit_code=2,
        )
    target = read_target(file, item_id) if file is not None else None
    g = globals_of(ctx)
    client = g.client()
    try:
        served = client.request("GET", f"/catalog/items/{item_id}")["item"]
        if target is None:
            target = client.request("GET", f"/catalog/items/{item_id}/versions/{to}")["item"]
        requests, resources = live_uses(client, item_id)
    finally:
        client.close()
    against = str(file) if file is not None else f"version {to}"
    report = impact_report(diff_items(served, target), requests, resources, file=against)
    if g.output is OutputFormat.table:
        _print(report)
    else:
        emit(report, g.output)
    if not report["ok"]:
        raise typer.Exit(1)


def _print(report: dict[str, Any]) -> None:
    target = report["target_version"]

    def line(text: str, **style: Any) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True, **style)

    line(
        f"{report['item_id']}: served {report['served_version']}, "
        f"target {target} ({report['target_file']})"
    )
    line(f"{len(report['requests'])} request(s) in flight")
    if report["requests"]:
        emit(
            None,
            OutputFormat.table,
            columns=["request", "status", "version", "requester"],
            rows=[
                (r["request_id"], r["status"], r["item_version"], r["requester"])
                for r in report["requests"]
            ],
        )
    behind = sum(r["older_than_target"] for r in report["resources"])
    line(
        f"{len(report['resources'])} live resource(s), {behind} made with a version before {target}"
    )
    if report["resources"]:
        emit(
            None,
            OutputFormat.table,
            columns=["resource", "version", "state", "owner", "older"],
            rows=[
                (
                    r["resource_id"],
                    r["item_version"],
                    r["state"],
                    r["owner"],
                    r["older_than_target"],
                )
                for r in report["resources"]
            ],
        )
    if not report["findings"]:
        line("no change to the form or the actions")
        return
    # Lines, not a table: a message and the ids it names are read and copied whole.
    for finding in report["findings"]:
        error = finding["level"] == "error"
        line(
            f"{finding['level']:<5} {finding['subject']}: {finding['message']} [{finding['rule']}]",
            style="red" if error else None,
        )
        for user in finding["used_by"]:
            line(f"        {user}")
    if report["errors"]:
        err_console.print(
            f"{report['errors']} breaking change(s): live requests or resources would not fit "
            f"the form of {target}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
