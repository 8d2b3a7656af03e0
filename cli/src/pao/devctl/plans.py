"""Rendering Terraform plans, input changes and approvals as text (pure: no call, no print)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

#: How a secret reaches devctl: the server masks it, and devctl never shows anything else.
MASK = "***"

#: Each change's symbol and colour, as Terraform draws them.
SYMBOLS: dict[str, tuple[str, str]] = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "magenta"),
    "delete": ("-", "red"),
    "read": ("<=", "cyan"),
}

STATE_STYLES = {
    "awaiting_approval": "bold yellow",
    "approved": "bold green",
    "applied": "bold green",
    "planned": "bold",
    "stale": "dim",
    "rejected": "bold red",
}

#: Stands for a field the inputs do not have.
UNSET = object()


def value_text(value: Any) -> str:
    """A value as Terraform shows it: strings quoted, JSON for the rest, a masked secret bare."""
    if value == MASK:
        return MASK
    if value is UNSET:
        return "(unset)"
    return json.dumps(value, default=str, ensure_ascii=False)


def counts_line(counts: dict[str, int] | None) -> str:
    """`1 to add, 0 to change, 0 to replace, 2 to destroy`."""
    c = counts or {}
    return (
        f"{c.get('add', 0)} to add, {c.get('change', 0)} to change, "
        f"{c.get('replace', 0)} to replace, {c.get('destroy', 0)} to destroy"
    )


def counts_short(counts: dict[str, int] | None) -> str:
    """`+1 ~0 -/+0 -2`, for a table cell."""
    c = counts or {}
    return (
        f"+{c.get('add', 0)} ~{c.get('change', 0)} -/+{c.get('replace', 0)} -{c.get('destroy', 0)}"
    )


def _attribute_line(action: str, attribute: dict[str, Any]) -> str:
    before = value_text(attribute.get("before"))
    after = value_text(attribute.get("after"))
    if action in ("create", "read"):
        shown = after
    elif action == "delete":
        shown = before
    else:
        shown = f"{before} -> {after}"
    return f"      {attribute['name']}: {shown}"


def render_plan(plan: dict[str, Any]) -> Text:
    """One plan of a request: a header (action, plan id, state, counts), then each change.

    A change is a line `symbol address` coloured by its action (`+` create, `~` update, `-/+`
    replace, `-` delete, `<=` read), then one indented line per attribute: `name: after` for a
    create or read, `name: before` for a delete, `name: before -> after` otherwise.
    """
    text = Text()
    text.append(f"{plan.get('action', '?')}: plan {plan.get('plan_id', '?')}", style="bold")
    if plan.get("generation") is not None:
        text.append(f", generation {plan['generation']}", style="bold")
    state = str(plan.get("state", "?"))
    text.append(", ", style="bold")
    text.append(state.replace("_", " "), style=STATE_STYLES.get(state, "bold"))
    if plan.get("destroy"):
        text.append(", destroys the resource", style="bold red")
    text.append("\n  " + counts_line(plan.get("counts")))
    changes = plan.get("changes") or []
    if not changes:
        text.append("\n  no changes", style="dim")
    for change in changes:
        action = str(change.get("action", "?"))
        symbol, style = SYMBOLS.get(action, ("?", "bold"))
        text.append("\n")
        text.append(f"{symbol:>3} {change.get('address', '?')}", style=style)
        for attribute in change.get("attributes") or []:
            text.append("\n" + _attribute_line(action, attribute), style=style)
    if plan.get("truncated"):
        text.append(f"\n  ... {plan['truncated']} more change(s) not shown", style="dim")
    return text


def pending_plans(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The plans of a `GET /requests/{id}/plan` answer that wait for approval."""
    return [p for p in document.get("plans") or [] if p.get("state") == "awaiting_approval"]


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, before, after) for each field whose value differs; UNSET where one side has none.

    A field whose old value is masked keeps its new value masked too: a secret stays hidden.
    """
    changes = []
    for name in [*old, *(n for n in new if n not in old)]:
        before, after = old.get(name, UNSET), new.get(name, UNSET)
        if before == after:
            continue
        changes.append((name, before, MASK if before == MASK and after is not UNSET else after))
    return changes


def render_input_changes(changes: list[tuple[str, Any, Any]]) -> Text:
    """One line per changed field: `~ name: before -> after`, `+ name: after`, `- name: before`."""
    text = Text()
    for i, (name, before, after) in enumerate(changes):
        if i:
            text.append("\n")
        if before is UNSET:
            text.append(f"  + {name}: {value_text(after)}", style="green")
        elif after is UNSET:
            text.append(f"  - {name}: {value_text(before)}", style="red")
        else:
            text.append(f"  ~ {name}: {value_text(before)} -> {value_text(after)}", style="yellow")
    return text


def approvers_text(approvers: dict[str, list[str]] | None) -> str:
    """`users ann, bob; teams team-dba` (or `nobody named`)."""
    parts = [
        f"{kind} {', '.join(names)}"
        for kind in ("users", "teams", "roles")
        if (names := (approvers or {}).get(kind))
    ]
    return "; ".join(parts) or "nobody named"


def approval_summary(approval: dict[str, Any] | None) -> str:
    """`approval of apply_db pending (any of teams team-dba; approved by ann)`."""
    if not approval:
        return "no approval asked"
    on = f" of {approval['action']}" if approval.get("action") else ""
    decided = [f"{d['decision']} by {d['by']}" for d in approval.get("decisions") or []]
    return (
        f"approval{on} {approval.get('state', '?')} ({approval.get('needed', 'any')} of "
        f"{approvers_text(approval.get('approvers'))}"
        + (f"; {', '.join(decided)}" if decided else "")
        + ")"
    )
