"""What a notice needs to know about a request, beyond the event that triggered it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestSummary:
    """A request as the notification service sees it when an event arrives."""

    request_id: str
    item_id: str
    item_name: str
    owner_team: str
    requester_id: str
    requester_name: str
    requester_email: str | None
    status: str
    jira_key: str | None = None
    jira_url: str | None = None
    escalation_level: int = 0
    #: The failure's error, the abort reason or the escalation reason, whichever applies.
    reason: str | None = None
    #: Public base URL of the gateway; links in notices point there when it is set.
    gateway_url: str | None = None
