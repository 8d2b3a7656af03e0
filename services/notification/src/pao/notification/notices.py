"""Which events notify whom, and what each notice says. Pure: no I/O.

The requester hears when a manual step opens, when the request waits for an approval, and when
it completes, fails, is aborted or escalated. The owning team hears when a manual step opens for
it, when a request fails, and when one is escalated to it. The teams an approval policy names
hear when a request waits for their approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from jinja2 import DictLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pao.contracts.envelope import EventEnvelope
from pao.contracts.events import decode
from pao.notification.routing import ChannelConfig, Routing
from pao.notification.summary import RequestSummary

REQUESTER = "requester"
TEAM = "team"
#: The teams an approval policy names (people named one by one are not reachable: PAO keeps no
#: directory of addresses; they see what waits for them with `devctl approvals list`).
APPROVERS = "approvers"

#: Who hears about each event.
AUDIENCES: dict[str, tuple[str, ...]] = {
    "ActionAwaitingManual": (REQUESTER, TEAM),
    "RequestCompleted": (REQUESTER,),
    "RequestFailed": (REQUESTER, TEAM),
    "RequestAborted": (REQUESTER,),
    "RequestEscalated": (REQUESTER, TEAM),
    "ApprovalRequested": (REQUESTER, APPROVERS),
    "ResourceExpiring": (REQUESTER,),
}

_REASON_LIMIT = 1_000
_SUBJECT_LIMIT = 200
_SLACK_HEADER_LIMIT = 150
_SLACK_SECTION_LIMIT = 3_000

_FOOTER = """
Status: {{ status }}
{% if jira_url %}
Ticket: {{ jira_key or "" }} {{ jira_url }}
{% endif %}
{% if request_url %}
Request: {{ request_url }}
{% endif %}
"""

# (event type, audience) -> (subject, text). Texts end with the footer: status and links.
_TEMPLATES: dict[tuple[str, str], tuple[str, str]] = {
    ("ActionAwaitingManual", REQUESTER): (
        "[PAO] {{ item_name }} ({{ request_id }}) is waiting on {{ jira_key or 'a manual step' }}",
        "Your request {{ request_id }} for {{ item_name }} is waiting on a manual step"
        "{% if jira_key %} tracked in {{ jira_key }}{% endif %}."
        " PAO carries on once the ticket is done.\n",
    ),
    ("ActionAwaitingManual", TEAM): (
        "[PAO] {{ jira_key or 'Manual step' }}: {{ item_name }} for {{ requester_name }}"
        " ({{ request_id }})",
        "Request {{ request_id }} for {{ item_name }}, from {{ requester_name }}, needs your team"
        "{% if jira_key %}: {{ jira_key }}{% endif %}.\n",
    ),
    ("ApprovalRequested", REQUESTER): (
        "[PAO] {{ item_name }} ({{ request_id }}) is waiting for approval",
        "Your request {{ request_id }} for {{ item_name }} is waiting for approval"
        "{% if plan_id %} of its Terraform plan{% endif %} by {{ approvers }}."
        " PAO carries on once it is approved.\n",
    ),
    ("ApprovalRequested", APPROVERS): (
        "[PAO] Approval needed: {{ item_name }} for {{ requester_name }} ({{ request_id }})",
        "{{ requester_name }} requested {{ item_name }} ({{ request_id }}), which needs your"
        " approval{% if plan_id %} of its Terraform plan {{ plan_id }}{% endif %}.\n"
        "See it with `devctl {{ 'terraform plan' if plan_id else 'request get' }}"
        " {{ request_id }}`, then `devctl request approve {{ request_id }}` or"
        " `devctl request reject {{ request_id }} --comment WHY`.\n",
    ),
    ("ResourceExpiring", REQUESTER): (
        "[PAO] Your {{ item_name }} expires at {{ expires_at }}",
        "What your request {{ request_id }} for {{ item_name }} made (resource {{ resource_id }})"
        " expires at {{ expires_at }}; PAO decommissions it then. To keep it, ask its owning team"
        " ({{ owner_team }}).\n",
    ),
    ("RequestCompleted", REQUESTER): (
        "[PAO] {{ item_name }} ({{ request_id }}) is ready",
        "Your request {{ request_id }} for {{ item_name }} has completed.\n",
    ),
    ("RequestFailed", REQUESTER): (
        "[PAO] {{ item_name }} ({{ request_id }}) failed",
        "Your request {{ request_id }} for {{ item_name }} failed"
        "{% if action %} at step {{ action }}{% endif %}: {{ reason or 'no error given' }}\n"
        "It can be retried once the cause is fixed.\n",
    ),
    ("RequestFailed", TEAM): (
        "[PAO] {{ item_name }} ({{ request_id }}) failed for {{ requester_name }}",
        "Request {{ request_id }} for {{ item_name }}, from {{ requester_name }}, failed"
        "{% if action %} at step {{ action }}{% endif %}: {{ reason or 'no error given' }}\n",
    ),
    ("RequestAborted", REQUESTER): (
        "[PAO] {{ item_name }} ({{ request_id }}) was aborted",
        "Your request {{ request_id }} for {{ item_name }} was aborted"
        "{% if by %} by {{ by }}{% endif %}: {{ reason or 'no reason given' }}\n",
    ),
    ("RequestEscalated", REQUESTER): (
        "[PAO] {{ item_name }} ({{ request_id }}) was escalated to {{ owner_team }}",
        "Your request {{ request_id }} for {{ item_name }} was escalated to {{ owner_team }}"
        " (level {{ level }}, urgency {{ urgency }}): {{ reason or 'no reason given' }}\n",
    ),
    ("RequestEscalated", TEAM): (
        "[PAO] Escalation level {{ level }} ({{ urgency }}): {{ item_name }} ({{ request_id }})",
        "{{ by or 'Someone' }} escalated request {{ request_id }} for {{ item_name }},"
        " from {{ requester_name }}, to your team.\n"
        "Reason: {{ reason or 'none given' }}\n"
        "Urgency: {{ urgency }}, escalation level {{ level }}\n",
    ),
}


def _loader_mapping() -> dict[str, str]:
    mapping = {"footer": _FOOTER}
    for (event_type, audience), (subject, text) in _TEMPLATES.items():
        mapping[f"{event_type}.{audience}.subject"] = subject
        mapping[f"{event_type}.{audience}.text"] = text + '{% include "footer" %}'
    return mapping


# Autoescaping is for HTML; these texts are plain text, Slack mrkdwn is escaped separately.
_ENV = ImmutableSandboxedEnvironment(
    loader=DictLoader(_loader_mapping()),
    undefined=StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Notice:
    """One message for one recipient through one channel, ready to be stored and sent."""

    event_id: UUID
    #: Who it is for: `requester:<user id>` or `team:<team>`.
    recipient: str
    channel: str
    #: The e-mail address for an e-mail channel, else None.
    address: str | None
    subject: str
    text: str
    #: The JSON body a webhook or Slack channel posts; empty for e-mail.
    payload: dict[str, Any]


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _context(event: EventEnvelope, summary: RequestSummary) -> dict[str, Any]:
    decoded = decode(event)
    data = decoded.model_dump()
    # The event is the latest word on the status, the ticket, the reason and the level; the
    # summary fills in what the event does not carry.
    status = getattr(decoded, "request_status", None) or data.get("status") or summary.status
    reason = data.get("error") or data.get("reason") or summary.reason
    gateway = (summary.gateway_url or "").rstrip("/")
    return {
        "request_id": summary.request_id,
        "item_id": summary.item_id,
        "item_name": summary.item_name,
        "owner_team": summary.owner_team,
        "requester_id": summary.requester_id,
        "requester_name": summary.requester_name or summary.requester_id,
        "status": status,
        "jira_key": data.get("key") or summary.jira_key,
        "jira_url": data.get("url") or summary.jira_url,
        "reason": _clip(reason, _REASON_LIMIT),
        "action": data.get("action"),
        "by": data.get("by"),
        "urgency": data.get("urgency") or "normal",
        "level": data.get("level") or summary.escalation_level,
        "request_url": f"{gateway}/api/v1/requests/{summary.request_id}" if gateway else None,
        "plan_id": data.get("plan_id"),
        "expires_at": data.get("expires_at"),
        "resource_id": data.get("resource_id"),
        "approvers": ", ".join(_approver_names(data)) or "its approvers",
    }


def _approver_names(data: dict[str, Any]) -> list[str]:
    approvers = (data.get("policy") or {}).get("approvers") or {}
    return [*approvers.get("users", []), *approvers.get("teams", []), *approvers.get("roles", [])]


def _approving_teams(event: EventEnvelope) -> list[str]:
    policy = event.data.get("policy") or {}
    return list((policy.get("approvers") or {}).get("teams") or [])


def _render(event_type: str, audience: str, context: dict[str, Any]) -> tuple[str, str]:
    subject = _ENV.get_template(f"{event_type}.{audience}.subject").render(context)
    text = _ENV.get_template(f"{event_type}.{audience}.text").render(context)
    # A subject is one header line: anything from an event (an item name) cannot break it.
    one_line = " ".join(subject.split())
    return _clip(one_line, _SUBJECT_LIMIT) or "", text.strip() + "\n"


def _webhook_payload(
    event: EventEnvelope, context: dict[str, Any], recipient: str, subject: str, text: str
) -> dict[str, Any]:
    jira = (
        {"key": context["jira_key"], "url": context["jira_url"]}
        if context["jira_key"] or context["jira_url"]
        else None
    )
    return {
        "event_type": event.event_type,
        "event_id": str(event.event_id),
        "request_id": context["request_id"],
        "item_id": context["item_id"],
        "status": context["status"],
        "recipient": recipient,
        "subject": subject,
        "text": text,
        "jira": jira,
        "occurred_at": event.occurred_at.isoformat(),
    }


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_payload(context: dict[str, Any], subject: str, text: str) -> dict[str, Any]:
    links = []
    if context["jira_url"]:
        links.append(f"<{context['jira_url']}|{_mrkdwn(context['jira_key'] or 'Ticket')}>")
    if context["request_url"]:
        links.append(f"<{context['request_url']}|Request {_mrkdwn(context['request_id'])}>")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(subject, _SLACK_HEADER_LIMIT)},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip(_mrkdwn(text), _SLACK_SECTION_LIMIT)},
        },
    ]
    if links:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]}
        )
    return {"text": _mrkdwn(f"{subject}\n{text}"), "blocks": blocks}


def _payload(
    config: ChannelConfig,
    event: EventEnvelope,
    context: dict[str, Any],
    recipient: str,
    subject: str,
    text: str,
) -> dict[str, Any]:
    if config.type == "webhook":
        return _webhook_payload(event, context, recipient, subject, text)
    if config.type == "slack":
        return _slack_payload(context, subject, text)
    return {}


def notices_for(event: EventEnvelope, summary: RequestSummary, routing: Routing) -> list[Notice]:
    """The notices `event` calls for, one per recipient and channel; none if it is filtered out.

    A requester without an e-mail address gets no e-mail; their other channels still apply.
    """
    if event.event_type not in routing.events:
        return []
    audiences = AUDIENCES.get(event.event_type, ())
    if not audiences:
        return []
    context = _context(event, summary)
    notices: list[Notice] = []
    for audience in audiences:
        if audience == REQUESTER:
            groups = [
                (
                    f"requester:{summary.requester_id}",
                    [(name, summary.requester_email) for name in routing.requesters],
                )
            ]
        else:
            teams = _approving_teams(event) if audience == APPROVERS else [summary.owner_team]
            groups = [
                (f"team:{team}", [(t.channel, t.to) for t in routing.team_targets(team)])
                for team in teams
            ]
        subject, text = _render(event.event_type, audience, context)
        for recipient, targets in groups:
            notices.extend(_notices(event, routing, context, recipient, targets, subject, text))
    return notices


def _notices(
    event: EventEnvelope,
    routing: Routing,
    context: dict[str, Any],
    recipient: str,
    targets: list[tuple[str, str | None]],
    subject: str,
    text: str,
) -> list[Notice]:
    notices = []
    for name, email in targets:
        config = routing.channels[name]
        address = email if config.type == "email" else None
        if config.type == "email" and not address:
            continue
        notices.append(
            Notice(
                event_id=event.event_id,
                recipient=recipient,
                channel=name,
                address=address,
                subject=subject,
                text=text,
                payload=_payload(config, event, context, recipient, subject, text),
            )
        )
    return notices
