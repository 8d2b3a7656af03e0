"""What each kind of request runs, which approvals apply to it, and how long a resource may live.

An item's actions create its resource; an update runs them again with the new inputs (a
Terraform action plans and applies its resource's workspace again, so infrastructure changes in
place); a decommission runs the item's declared teardown actions, then destroys each Terraform
action's workspace, last first. An item with neither (a manual item) opens a ticket in the
project of its first JIRA action. Request, fulfilment and previews all ask this module, so they
agree on the action plan.

An item runs in one of its fulfilment modes (`modes`, by default just `mode`). Its own actions
are its default; an item whose actions are automated (Terraform, REST) and that also offers
`manual` runs, in manual mode, a single JIRA action named `manual`: its fallback's ticket, for
every kind of request (the ticket's templates can tell them apart by `request.kind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.contracts.events import FALLBACK, MANUAL

KINDS = ("create", "update", "decommission")
MODES = ("automated", "manual")

#: The name of the ticket a manual item's decommission opens when it declares no teardown.
TEARDOWN = "teardown"
#: Action names PAO gives its own actions; an item may not use them.
RESERVED_NAMES = frozenset({MANUAL, FALLBACK})
#: Action types that do the work themselves.
AUTOMATED_TYPES = frozenset({"terraform", "rest"})


def modes_of(item: Mapping[str, Any]) -> list[str]:
    """The modes an item may run in: its `modes`, else its one `mode`."""
    fulfillment = item["fulfillment"]
    return list(fulfillment.get("modes") or [fulfillment["mode"]])


def check_mode(item: Mapping[str, Any], mode: str) -> str:
    """`mode`, if the item offers it; else the error naming the modes it does offer."""
    offered = modes_of(item)
    if mode not in offered:
        choices = ", ".join(offered)
        raise PaoError(
            errors.MODE_NOT_OFFERED,
            f"{item['metadata']['id']} does not offer mode {mode}; it offers {choices}",
            details=[ErrorDetail(field="/mode", message=f"one of: {choices}")],
            suggestion=f"Use one of: {choices}.",
        )
    return mode


def default_mode(item: Mapping[str, Any]) -> str:
    """The mode the item runs in unless an operator or the requester chose another."""
    return str(item["fulfillment"]["mode"])


def effective_mode(item: Mapping[str, Any], switched: str | None) -> str:
    """The mode new requests of the item run in: an operator's switch while the item still
    offers that mode, else the item's default."""
    return switched if switched in modes_of(item) else default_mode(item)


def is_automated(item: Mapping[str, Any]) -> bool:
    """Whether any of the item's actions does the work itself (Terraform or REST)."""
    return any(a["type"] in AUTOMATED_TYPES for a in item["fulfillment"]["actions"])


def runs_manual_ticket(item: Mapping[str, Any], mode: str | None) -> bool:
    """Whether a request in `mode` runs the item's manual ticket instead of its actions."""
    return (mode or default_mode(item)) == "manual" and is_automated(item)


def manual_ticket(item: Mapping[str, Any], name: str = MANUAL) -> dict[str, Any]:
    """The item's fallback ticket as an action named `name` (`manual` or `fallback`)."""
    return {"name": name, "type": "jira", "jira": item["fulfillment"]["fallback"]["jira"]}


def _default_teardown(item: Mapping[str, Any]) -> dict[str, Any] | None:
    jira_actions = [a for a in item["fulfillment"]["actions"] if a["type"] == "jira"]
    if not jira_actions:
        return None
    first = jira_actions[0]["jira"]
    name = item["metadata"]["name"]
    return {
        "name": TEARDOWN,
        "type": "jira",
        "description": "Remove what the item made (no teardown is declared).",
        "jira": {
            "project": first["project"],
            "issue_type": first["issue_type"],
            "summary": f"Decommission {name} for {{{{ user.name }}}} "
            "({{ request.environment }}, resource {{ request.resource_id }})",
            "description": (
                f"Please remove the {name} made for resource {{{{ request.resource_id }}}}.\n\n"
                "Inputs it was made with: {{ inputs | json }}\n\n"
                "Requested through PAO, request {{ request.id }}."
            ),
            "labels": ["pao", "decommission"],
        },
    }


def actions_for(
    item: Mapping[str, Any], kind: str, mode: str | None = None
) -> list[dict[str, Any]]:
    """The actions a request of `kind` runs in `mode` (default: the item's), in order."""
    if runs_manual_ticket(item, mode):
        return [manual_ticket(item)]
    actions = list(item["fulfillment"]["actions"])
    if kind != "decommission":
        return actions
    teardown = list((item.get("lifecycle") or {}).get("teardown") or [])
    destroys = [a for a in reversed(actions) if a["type"] == "terraform"]
    if not teardown and not destroys:
        default = _default_teardown(item)
        teardown = [default] if default else []
    return [*teardown, *destroys]


def destroys(action: Mapping[str, Any], kind: str) -> bool:
    """Whether running `action` in a request of `kind` destroys what it made."""
    return kind == "decommission" and action["type"] == "terraform"


def applicable_approval(
    policy: Mapping[str, Any] | None, *, environment: str, kind: str
) -> dict[str, Any] | None:
    """The approval a request needs from `policy`, once its environment and kind are known;
    None when the policy does not apply. A remaining `changes` condition is for the plan."""
    if not policy:
        return None
    when = policy.get("when") or {}
    if "environments" in when and environment not in when["environments"]:
        return None
    if "kinds" in when and kind not in when["kinds"]:
        return None
    return {
        "approvers": {k: list(v) for k, v in policy["approvers"].items()},
        "needed": policy.get("needed", "any"),
        "changes": list(when.get("changes") or []),
    }


def expiry_problem(
    item: Mapping[str, Any], expires_at: datetime | None, *, now: datetime
) -> str | None:
    """Why `expires_at` is not allowed for the item, or None."""
    ttl = (item.get("lifecycle") or {}).get("ttl") or {}
    if expires_at is None:
        return "this item needs an expires_at" if ttl.get("required") else None
    if expires_at.tzinfo is None:
        return "expires_at needs a time zone, e.g. 2026-12-24T18:00:00Z"
    if expires_at <= now:
        return "expires_at must be in the future"
    if "max_days" in ttl and expires_at - now > timedelta(days=ttl["max_days"]):
        return f"expires_at may be at most {ttl['max_days']} days away for this item"
    return None
