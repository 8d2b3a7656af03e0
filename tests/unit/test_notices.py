"""Who hears about what: notices for request events, their texts, and the routing file."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pao.contracts.envelope import EventEnvelope
from pao.contracts.events import (
    ActionAwaitingManual,
    ActionSucceeded,
    Event,
    RequestAborted,
    RequestCompleted,
    RequestEscalated,
    RequestFailed,
    RequestRetried,
)
from pao.notification.notices import Notice, notices_for
from pao.notification.routing import Routing, RoutingError, load_routing, parse_routing
from pao.notification.summary import RequestSummary

ROUTING_YAML = """
channels:
  ops-webhook: {type: webhook, url: "https://hooks.example.com/pao", headers: {X-Token: "s3cr3t"}}
  data-slack:  {type: slack, url: "https://hooks.slack.com/services/T0/B0/XYZ"}
  mail:
    type: email
    host: smtp.example.com
    port: 587
    from: "pao@example.com"
    starttls: true
    username: pao
    password_env: PAO_SMTP_PASSWORD
requesters: [mail]
teams:
  team-data: [{channel: data-slack}, {channel: mail, to: "data-team@example.com"}]
  "*": [{channel: ops-webhook}]
"""

TICKET = "https://jira.example.com/browse/DATA-42"


def routing(extra: str = "") -> Routing:
    return parse_routing(ROUTING_YAML + extra, source="notifications.yaml")


def summary(**changes: object) -> RequestSummary:
    fields: dict[str, object] = {
        "request_id": "req-7f3a",
        "item_id": "postgresql-rds",
        "item_name": "PostgreSQL (standard)",
        "owner_team": "team-data",
        "requester_id": "dana",
        "requester_name": "Dana Scully",
        "requester_email": "dana@example.com",
        "status": "in_progress",
        "gateway_url": "https://pao.example.com",
    }
    fields.update(changes)
    return RequestSummary(**fields)  # type: ignore[arg-type]


def envelope(event: Event) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=event.schema_version,
        stream_id="request-req-7f3a",
        stream_version=3,
        global_position=99,
        occurred_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        data=event.model_dump(mode="json"),
    )


def awaiting_manual() -> ActionAwaitingManual:
    return ActionAwaitingManual(
        request_id="req-7f3a", action="create-db", system="jira", key="DATA-42", url=TICKET
    )


def escalated() -> RequestEscalated:
    return RequestEscalated(
        request_id="req-7f3a", by="dana", reason="blocks our launch", urgency="high", level=2
    )


def failed() -> RequestFailed:
    return RequestFailed(request_id="req-7f3a", action="apply", error="quota exceeded for db.r6g")


def by_target(notices: list[Notice]) -> dict[tuple[str, str], Notice]:
    return {(n.recipient, n.channel): n for n in notices}


# --- who hears about what -------------------------------------------------------------------------


def test_a_manual_step_tells_the_requester_and_the_owning_team_with_the_ticket() -> None:
    event = envelope(awaiting_manual())
    notices = by_target(notices_for(event, summary(), routing()))

    assert set(notices) == {
        ("requester:dana", "mail"),
        ("team:team-data", "data-slack"),
        ("team:team-data", "mail"),
    }
    for notice in notices.values():
        assert notice.event_id == event.event_id
        assert "req-7f3a" in notice.text
        assert "PostgreSQL (standard)" in notice.text
        assert "DATA-42" in notice.text
        assert TICKET in notice.text
        assert "awaiting_manual" in notice.text
        assert "https://pao.example.com/api/v1/requests/req-7f3a" in notice.text
    assert "DATA-42" in notices["requester:dana", "mail"].subject


def test_email_goes_to_the_requester_and_to_the_team_address() -> None:
    notices = by_target(notices_for(envelope(awaiting_manual()), summary(), routing()))

    assert notices["requester:dana", "mail"].address == "dana@example.com"
    assert notices["team:team-data", "mail"].address == "data-team@example.com"
    assert notices["team:team-data", "data-slack"].address is None


def test_completion_tells_only_the_requester() -> None:
    event = RequestCompleted(request_id="req-7f3a", outputs={})
    notices = notices_for(envelope(event), summary(status="completed"), routing())

    assert [(n.recipient, n.channel) for n in notices] == [("requester:dana", "mail")]
    assert "completed" in notices[0].text
    assert "ready" in notices[0].subject


def test_a_failure_tells_requester_and_team_with_the_error() -> None:
    notices = notices_for(envelope(failed()), summary(), routing())

    assert {n.recipient for n in notices} == {"requester:dana", "team:team-data"}
    for notice in notices:
        assert "quota exceeded for db.r6g" in notice.text
        assert "Status: failed" in notice.text
        assert "failed" in notice.subject


def test_an_abort_tells_the_requester_why() -> None:
    event = RequestAborted(request_id="req-7f3a", by="sre-bot", reason="duplicate of req-7f39")
    notices = notices_for(envelope(event), summary(), routing())

    assert [n.recipient for n in notices] == ["requester:dana"]
    assert "duplicate of req-7f39" in notices[0].text
    assert "sre-bot" in notices[0].text
    assert "aborted" in notices[0].text


def test_an_escalation_tells_the_team_the_reason_urgency_and_level() -> None:
    notices = by_target(notices_for(envelope(escalated()), summary(), routing()))

    team = notices["team:team-data", "data-slack"]
    assert "blocks our launch" in team.text
    assert "high" in team.text
    assert "level 2" in team.text
    assert "Escalation level 2" in team.subject
    assert "blocks our launch" in notices["requester:dana", "mail"].text


@pytest.mark.parametrize(
    "event",
    [
        ActionSucceeded(request_id="req-7f3a", action="apply", outputs={}),
        RequestRetried(request_id="req-7f3a", by="dana", actions=["apply"]),
    ],
)
def test_events_nobody_needs_to_hear_about_send_nothing(event: Event) -> None:
    assert notices_for(envelope(event), summary(), routing()) == []


def test_the_events_filter_is_respected() -> None:
    only_failures = routing("events: [RequestFailed]\n")

    assert notices_for(envelope(awaiting_manual()), summary(), only_failures) == []
    assert notices_for(envelope(escalated()), summary(), only_failures) == []
    assert len(notices_for(envelope(failed()), summary(), only_failures)) == 3


def test_a_team_without_its_own_entry_is_reached_through_the_catch_all() -> None:
    notices = notices_for(envelope(failed()), summary(owner_team="team-payments"), routing())

    team = [n for n in notices if n.recipient.startswith("team:")]
    assert [(n.recipient, n.channel) for n in team] == [("team:team-payments", "ops-webhook")]


def test_a_requester_without_an_email_address_gets_no_mail() -> None:
    notices = notices_for(envelope(failed()), summary(requester_email=None), routing())

    assert all(n.recipient != "requester:dana" for n in notices)


def test_without_a_notifications_file_nothing_is_sent() -> None:
    assert notices_for(envelope(failed()), summary(), load_routing(None)) == []


def test_without_a_gateway_url_there_is_no_request_link() -> None:
    notices = notices_for(envelope(failed()), summary(gateway_url=None), routing())

    assert notices
    assert all("/api/v1/requests/" not in n.text for n in notices)


def test_a_ticket_known_from_the_request_is_linked_in_later_notices() -> None:
    known = summary(jira_key="DATA-42", jira_url=TICKET)
    notices = notices_for(envelope(escalated()), known, routing())

    assert all(TICKET in n.text for n in notices)


def test_an_item_name_cannot_break_the_subject_line() -> None:
    notices = notices_for(envelope(failed()), summary(item_name="Evil\r\nBcc: x@y"), routing())

    assert all("\n" not in n.subject and "\r" not in n.subject for n in notices)


# --- payloads -------------------------------------------------------------------------------------


def test_the_webhook_payload_describes_the_event() -> None:
    event = envelope(awaiting_manual())
    notice = notices_for(event, summary(owner_team="team-payments"), routing())[-1]

    assert notice.channel == "ops-webhook"
    assert notice.payload == {
        "event_type": "ActionAwaitingManual",
        "event_id": str(event.event_id),
        "request_id": "req-7f3a",
        "item_id": "postgresql-rds",
        "status": "awaiting_manual",
        "recipient": "team:team-payments",
        "subject": notice.subject,
        "text": notice.text,
        "jira": {"key": "DATA-42", "url": TICKET},
        "occurred_at": "2025-03-01T12:00:00+00:00",
    }


def test_the_webhook_payload_has_no_jira_before_a_ticket_exists() -> None:
    notice = notices_for(envelope(failed()), summary(owner_team="team-payments"), routing())[-1]

    assert notice.payload["jira"] is None


def test_the_slack_payload_is_an_incoming_webhook_message() -> None:
    notices = by_target(
        notices_for(envelope(awaiting_manual()), summary(item_name="A <b> & C"), routing())
    )
    payload = notices["team:team-data", "data-slack"].payload

    assert "DATA-42" in payload["text"]
    assert "A &lt;b&gt; &amp; C" in payload["text"]
    kinds = [block["type"] for block in payload["blocks"]]
    assert kinds == ["header", "section", "context"]
    links = payload["blocks"][2]["elements"][0]["text"]
    assert f"<{TICKET}|DATA-42>" in links
    assert "<https://pao.example.com/api/v1/requests/req-7f3a|Request req-7f3a>" in links


def test_email_notices_carry_no_payload() -> None:
    notices = by_target(notices_for(envelope(failed()), summary(), routing()))

    assert notices["requester:dana", "mail"].payload == {}


# --- the notifications file -----------------------------------------------------------------------


def test_the_example_file_loads_with_the_default_events() -> None:
    loaded = routing()

    assert set(loaded.channels) == {"ops-webhook", "data-slack", "mail"}
    assert loaded.events == {
        "ActionAwaitingManual",
        "RequestCompleted",
        "RequestFailed",
        "RequestAborted",
        "RequestEscalated",
        "ApprovalRequested",
        "ResourceExpiring",
    }


def test_an_approval_tells_the_requester_and_each_approving_team_how_to_decide() -> None:
    from pao.contracts.events import ApprovalPolicy, ApprovalRequested, Approvers

    event = envelope(
        ApprovalRequested(
            request_id="req-7f3a",
            action="database",
            plan_id="plan-1",
            policy=ApprovalPolicy(approvers=Approvers(users=["sam"], teams=["team-data", "sec"])),
        )
    )
    notices = by_target(notices_for(event, summary(owner_team="team-web"), routing()))

    assert set(notices) == {
        ("requester:dana", "mail"),
        ("team:team-data", "data-slack"),
        ("team:team-data", "mail"),
        ("team:sec", "ops-webhook"),  # the "*" entry for a team without its own
    }
    to_team = notices["team:team-data", "mail"]
    assert "Approval needed" in to_team.subject
    assert "devctl terraform plan req-7f3a" in to_team.text
    assert "devctl request approve req-7f3a" in to_team.text
    assert "sam, team-data, sec" in notices["requester:dana", "mail"].text


def test_secrets_stay_out_of_the_routing_repr() -> None:
    text = repr(routing())

    assert "s3cr3t" not in text
    assert "XYZ" not in text


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("port: 587", "port: many"), "channels.mail.port"),
        (("type: slack", "type: pager"), "channels.data-slack"),
        (('url: "https://hooks.example.com/pao"', 'url: "ftp://x"'), "channels.ops-webhook.url"),
        (("host: smtp.example.com", "hots: smtp.example.com"), "channels.mail.host"),
        (("requesters: [mail]", "requesters: [mial]"), "requesters[0]"),
        (("{channel: data-slack}", "{channel: slack}"), "teams.team-data[0].channel"),
        (
            ('{channel: mail, to: "data-team@example.com"}', "{channel: mail}"),
            "teams.team-data[1].to",
        ),
        (("requesters: [mail]", "requesters: [mail]\nevents: [RequestSubmitted]"), "events"),
    ],
)
def test_a_bad_file_names_the_file_and_the_field(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in ROUTING_YAML
    with pytest.raises(RoutingError) as caught:
        parse_routing(ROUTING_YAML.replace(old, new), source="notifications.yaml")

    message = str(caught.value)
    assert message.startswith("notifications.yaml: ")
    assert expected in message


def test_a_password_in_the_file_is_refused_without_being_repeated() -> None:
    text = ROUTING_YAML.replace("password_env: PAO_SMTP_PASSWORD", "password: hunter2")
    with pytest.raises(RoutingError) as caught:
        parse_routing(text, source="notifications.yaml")

    assert "channels.mail.password" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_broken_yaml_names_the_line() -> None:
    with pytest.raises(RoutingError, match=r"^notifications\.yaml:2:"):
        parse_routing("channels:\n  mail: type: email\n", source="notifications.yaml")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "notifications.yaml"
    with pytest.raises(RoutingError, match=r"notifications\.yaml"):
        load_routing(missing)
