"""Notices reach people: a real SMTP server, real HTTP receivers and the outbox in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from aiosmtpd.controller import Controller

from conftest import fresh_database
from pao.contracts.envelope import EventEnvelope
from pao.contracts.events import ActionAwaitingManual, Event, RequestFailed
from pao.devstack.ports import free_port
from pao.notification import MIGRATIONS
from pao.notification.channels import (
    Channel,
    DeliveryError,
    EmailChannel,
    WebhookChannel,
    build_channels,
)
from pao.notification.notices import Notice, notices_for
from pao.notification.outbox import OutboxSender, enqueue
from pao.notification.routing import Routing, load_routing
from pao.notification.summary import RequestSummary
from pao.shared.database import create_pool, migrate

pytestmark = pytest.mark.asyncio(loop_scope="session")

TICKET = "https://jira.example.com/browse/DATA-42"
UNKNOWN_ADDRESS = "nobody@example.com"


# --- the receiving ends ---------------------------------------------------------------------------


@dataclass
class Mailbox:
    """An SMTP handler that keeps every accepted mail and refuses one unknown address."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address == UNKNOWN_ADDRESS:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for rcpt, message in self.messages if address in rcpt]


@dataclass
class Receiver:
    """HTTP endpoints that record every POST: healthy, flaky once, always down, rejecting."""

    base_url: str = ""
    posts: dict[str, list[tuple[Mapping[str, str], dict[str, Any]]]] = field(default_factory=dict)

    def calls(self, route: str) -> list[dict[str, Any]]:
        return [body for _, body in self.posts.get(route, [])]

    def headers(self, route: str) -> list[Mapping[str, str]]:
        return [headers for headers, _ in self.posts.get(route, [])]

    async def handle(self, request: web.Request) -> web.Response:
        route = request.match_info["route"]
        seen = self.posts.setdefault(route, [])
        seen.append((request.headers, await request.json()))
        if route == "flaky" and len(seen) == 1:
            return web.Response(status=503, text="try again later")
        if route == "down":
            return web.Response(status=503, text="maintenance")
        if route == "rejecting":
            return web.Response(status=400, text="invalid_payload")
        return web.Response(text="ok")


@pytest_asyncio.fixture(loop_scope="session")
async def mailbox() -> AsyncIterator[tuple[Mailbox, int]]:
    """An aiosmtpd server on a free loopback port; yields its mailbox and port."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    yield box, port
    await asyncio.to_thread(controller.stop)


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    """An aiohttp server on a free loopback port recording webhook and Slack POSTs."""
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{route}", recorder.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    recorder.base_url = f"http://{host}:{port}/hooks"
    yield recorder
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def pool(postgres_server: str) -> AsyncIterator[asyncpg.Pool]:
    """A fresh database with the notification outbox."""
    async with fresh_database(postgres_server) as dsn:
        await migrate(dsn, ("pao.shared.migrations", MIGRATIONS))
        p = await create_pool(dsn, min_size=1, max_size=8, application_name="pao-notify-tests")
        yield p
        await p.close()


@pytest.fixture
def routing(tmp_path: Path, receiver: Receiver, mailbox: tuple[Mailbox, int]) -> Routing:
    """A notifications file pointing at this test's receivers, loaded the way the service does."""
    _, smtp_port = mailbox
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"""
channels:
  ops-webhook: {{type: webhook, url: "{receiver.base_url}/ops", headers: {{X-Token: t0ken}}}}
  data-slack: {{type: slack, url: "{receiver.base_url}/slack"}}
  flaky-webhook: {{type: webhook, url: "{receiver.base_url}/flaky"}}
  down-webhook: {{type: webhook, url: "{receiver.base_url}/down"}}
  rejecting-webhook: {{type: webhook, url: "{receiver.base_url}/rejecting"}}
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, from: pao@example.com, starttls: false}}
requesters: [mail]
teams:
  team-data:
    - {{channel: data-slack}}
    - {{channel: mail, to: data-team@example.com}}
    - {{channel: ops-webhook}}
  team-flaky: [{{channel: flaky-webhook}}]
  team-down: [{{channel: down-webhook}}]
  team-rejecting: [{{channel: rejecting-webhook}}]
  team-ghost: [{{channel: mail, to: "{UNKNOWN_ADDRESS}"}}]
""",
        encoding="utf-8",
    )
    return load_routing(path)


@pytest_asyncio.fixture(loop_scope="session")
async def channels(routing: Routing) -> AsyncIterator[dict[str, Channel]]:
    async with aiohttp.ClientSession() as session:
        yield build_channels(routing, session, environ={})


# --- the story's steps ----------------------------------------------------------------------------


def summary(owner_team: str = "team-data") -> RequestSummary:
    return RequestSummary(
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        item_id="postgresql-rds",
        item_name="PostgreSQL (standard)",
        owner_team=owner_team,
        requester_id="dana",
        requester_name="Dana Scully",
        requester_email="dana@example.com",
        status="in_progress",
        gateway_url="https://pao.example.com",
    )


def envelope(event: Event) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=event.schema_version,
        stream_id=f"request-{event.request_id}",  # type: ignore[attr-defined]
        stream_version=4,
        global_position=1,
        occurred_at=datetime.now(UTC),
        data=event.model_dump(mode="json"),
    )


def awaiting_manual(request: RequestSummary) -> EventEnvelope:
    return envelope(
        ActionAwaitingManual(
            request_id=request.request_id, action="db", system="jira", key="DATA-42", url=TICKET
        )
    )


def request_failed(request: RequestSummary) -> EventEnvelope:
    return envelope(
        RequestFailed(request_id=request.request_id, action="apply", error="quota exceeded")
    )


async def handle(pool: asyncpg.Pool, notices: list[Notice]) -> int:
    """What the service does with an event's notices: store them in the event's transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return await enqueue(conn, notices)


@contextlib.asynccontextmanager
async def senders(
    pool: asyncpg.Pool, channels: Mapping[str, Channel], count: int = 1, **options: Any
) -> AsyncIterator[None]:
    """Outbox senders running until the block ends; each finishes its batch before stopping."""
    stop = asyncio.Event()
    options.setdefault("retry_base", timedelta(milliseconds=20))
    options.setdefault("poll_interval", 0.02)
    tasks = [
        asyncio.create_task(OutboxSender(pool, channels, **options).run(stop)) for _ in range(count)
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def outbox(pool: asyncpg.Pool, event: EventEnvelope) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM notification_outbox WHERE event_id = $1", event.event_id)
    return {(row["recipient"], row["channel"]): row for row in rows}


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.02)


def settled(pool: asyncpg.Pool, event: EventEnvelope, *final: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        rows = await outbox(pool, event)
        return bool(rows) and all(row["status"] in final for row in rows.values())

    return check


# --- the tests ------------------------------------------------------------------------------------


async def test_a_manual_step_reaches_requester_and_team_by_mail_webhook_and_slack(
    pool: asyncpg.Pool,
    routing: Routing,
    channels: dict[str, Channel],
    mailbox: tuple[Mailbox, int],
    receiver: Receiver,
) -> None:
    box, _ = mailbox
    request = summary()
    event = awaiting_manual(request)

    assert await handle(pool, notices_for(event, request, routing)) == 4
    async with senders(pool, channels):
        await until(settled(pool, event, "sent"))

    [to_dana] = box.to("dana@example.com")
    assert to_dana["To"] == "dana@example.com"
    assert to_dana["From"] == "pao@example.com"
    assert "DATA-42" in to_dana["Subject"]
    assert to_dana["Date"]
    assert to_dana["Message-ID"].startswith(f"<{event.event_id.hex}.")
    body = to_dana.get_content()
    assert request.request_id in body
    assert TICKET in body
    assert f"https://pao.example.com/api/v1/requests/{request.request_id}" in body
    [to_team] = box.to("data-team@example.com")
    assert "needs your team" in to_team.get_content()

    [webhook] = receiver.calls("ops")
    assert webhook["event_type"] == "ActionAwaitingManual"
    assert webhook["event_id"] == str(event.event_id)
    assert webhook["request_id"] == request.request_id
    assert webhook["status"] == "awaiting_manual"
    assert webhook["jira"] == {"key": "DATA-42", "url": TICKET}
    [headers] = receiver.headers("ops")
    assert headers["X-Token"] == "t0ken"
    assert headers["X-PAO-Event-ID"] == str(event.event_id)

    [slack] = receiver.calls("slack")
    assert "DATA-42" in slack["text"]
    assert slack["blocks"][0]["type"] == "header"

    rows = await outbox(pool, event)
    assert all(row["attempts"] == 1 and row["sent_at"] is not None for row in rows.values())


async def test_a_redelivered_event_is_delivered_once_per_recipient_and_channel(
    pool: asyncpg.Pool,
    routing: Routing,
    channels: dict[str, Channel],
    mailbox: tuple[Mailbox, int],
    receiver: Receiver,
) -> None:
    box, _ = mailbox
    request = summary()
    event = request_failed(request)

    assert await handle(pool, notices_for(event, request, routing)) == 4
    assert await handle(pool, notices_for(event, request, routing)) == 0
    async with senders(pool, channels, count=3):
        await until(settled(pool, event, "sent"))
        # Delivered and then redelivered again while the senders run: still nothing new.
        assert await handle(pool, notices_for(event, request, routing)) == 0

    assert len(await outbox(pool, event)) == 4
    assert len(box.to("dana@example.com")) == 1
    assert len(box.to("data-team@example.com")) == 1
    assert len(receiver.calls("ops")) == 1
    assert len(receiver.calls("slack")) == 1


async def test_a_receiver_that_is_briefly_down_gets_the_notice_on_retry(
    pool: asyncpg.Pool, routing: Routing, channels: dict[str, Channel], receiver: Receiver
) -> None:
    request = summary(owner_team="team-flaky")
    event = request_failed(request)

    await handle(pool, notices_for(event, request, routing))
    async with senders(pool, channels):
        await until(settled(pool, event, "sent"))

    row = (await outbox(pool, event))["team:team-flaky", "flaky-webhook"]
    assert row["attempts"] == 2
    calls = receiver.calls("flaky")
    assert len(calls) == 2
    assert calls[0] == calls[1]
    assert calls[1]["text"].startswith(f"Request {request.request_id}")


async def test_a_receiver_that_stays_down_is_given_up_after_the_last_attempt(
    pool: asyncpg.Pool, routing: Routing, channels: dict[str, Channel], receiver: Receiver
) -> None:
    request = summary(owner_team="team-down")
    event = request_failed(request)

    await handle(pool, notices_for(event, request, routing))
    async with senders(pool, channels, max_attempts=3):
        await until(settled(pool, event, "sent", "failed"))

    row = (await outbox(pool, event))["team:team-down", "down-webhook"]
    assert row["status"] == "failed"
    assert row["attempts"] == 3
    assert "HTTP 503" in row["last_error"]
    assert len(receiver.calls("down")) == 3


async def test_a_rejected_notice_fails_at_once_with_the_error(
    pool: asyncpg.Pool,
    routing: Routing,
    channels: dict[str, Channel],
    mailbox: tuple[Mailbox, int],
    receiver: Receiver,
) -> None:
    box, _ = mailbox
    to_rejecting, to_ghost = summary(owner_team="team-rejecting"), summary(owner_team="team-ghost")
    rejected, bounced = request_failed(to_rejecting), request_failed(to_ghost)
    await handle(pool, notices_for(rejected, to_rejecting, routing))
    await handle(pool, notices_for(bounced, to_ghost, routing))
    async with senders(pool, channels):
        await until(settled(pool, rejected, "sent", "failed"))
        await until(settled(pool, bounced, "sent", "failed"))

    webhook = (await outbox(pool, rejected))["team:team-rejecting", "rejecting-webhook"]
    assert webhook["status"] == "failed"
    assert webhook["attempts"] == 1
    assert webhook["last_error"] == "rejecting-webhook: HTTP 400: invalid_payload"
    assert len(receiver.calls("rejecting")) == 1

    mail = (await outbox(pool, bounced))["team:team-ghost", "mail"]
    assert mail["status"] == "failed"
    assert mail["attempts"] == 1
    assert "550" in mail["last_error"]
    assert box.to(UNKNOWN_ADDRESS) == []


async def test_a_notice_interrupted_while_sending_is_marked_unknown_and_not_resent(
    pool: asyncpg.Pool,
    routing: Routing,
    channels: dict[str, Channel],
    mailbox: tuple[Mailbox, int],
    receiver: Receiver,
) -> None:
    box, _ = mailbox
    request = summary()
    event = awaiting_manual(request)
    await handle(pool, notices_for(event, request, routing))
    # A sender died two minutes ago while posting to the webhook; another is posting to Slack now.
    await pool.execute(
        """UPDATE notification_outbox
           SET status = 'sending', attempts = 1,
               claimed_at = now() - CASE channel WHEN 'ops-webhook' THEN interval '2 minutes'
                                                 ELSE interval '0' END
           WHERE event_id = $1 AND channel IN ('ops-webhook', 'data-slack')""",
        event.event_id,
    )

    async with senders(pool, channels):
        await until(settled(pool, event, "sent", "unknown", "sending"))

    rows = await outbox(pool, event)
    assert rows["team:team-data", "ops-webhook"]["status"] == "unknown"
    assert "unknown" in rows["team:team-data", "ops-webhook"]["last_error"]
    assert rows["team:team-data", "data-slack"]["status"] == "sending"
    assert rows["requester:dana", "mail"]["status"] == "sent"
    assert rows["team:team-data", "mail"]["status"] == "sent"
    assert receiver.calls("ops") == []
    assert receiver.calls("slack") == []
    assert len(box.messages) == 2


async def test_unreachable_receivers_are_transient_failures() -> None:
    closed = free_port()
    notice = Notice(
        event_id=uuid.uuid4(),
        recipient="requester:dana",
        channel="c",
        address="dana@example.com",
        subject="s",
        text="t",
        payload={},
    )
    mail = EmailChannel("mail", host="127.0.0.1", port=closed, sender="pao@example.com")
    async with aiohttp.ClientSession() as session:
        hook = WebhookChannel("hook", url=f"http://127.0.0.1:{closed}/x", session=session)
        for channel in (mail, hook):
            with pytest.raises(DeliveryError) as caught:
                await channel.send(notice)
            assert caught.value.transient
            assert caught.value.message.startswith(f"{channel.name}: ")
