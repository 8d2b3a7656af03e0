"""The whole stack as a developer meets it: `pao up`, then `devctl` requests for each manual
catalog item (automated ones: test_resources_e2e), the JIRA issue worked in JIRA, the requester
notified, every event on Kafka in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from aiosmtpd.controller import Controller

from conftest import BIN, REPO
from pao.devstack.ports import free_port
from pao.fulfillment.jira import JiraClient
from pao.shared.kafka import make_consumer
from pao.shared.relay import decode_record_value
from pao.shared.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

ITEMS = {
    "eks-application": {
        "app_name": "shop",
        "environment": "dev",
        "cost_center": "CC-0001",
        "container_image": "registry.example.com/shop:1.0.0",
    },
    "postgresql-rds": {
        "db_name": "shop",
        "environment": "dev",
        "instance_size": "small",
        "owner_email": "shop@example.com",
    },
}


@dataclass
class Inbox:
    mails: list[Any] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)


class _Mailbox:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.inbox.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@dataclass
class Pao:
    stack: dict[str, Any]
    env: dict[str, str]
    inbox: Inbox
    user: str


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    controller = Controller(_Mailbox(box), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pao(
    inbox: tuple[Inbox, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pao]:
    box, smtp_port = inbox

    async def hook(request: web.Request) -> web.Response:
        box.hooks.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    tmp = tmp_path_factory.mktemp("pao-e2e")
    routing = tmp / "notifications.yaml"
    routing.write_text(
        yaml.safe_dump(
            {
                "channels": {
                    "hook": {"type": "webhook", "url": f"http://127.0.0.1:{hook_port}/hook"},
                    "mail": {
                        "type": "email",
                        "host": "127.0.0.1",
                        "port": smtp_port,
                        "from": "pao@example.com",
                        "starttls": False,
                    },
                },
                "requesters": ["mail"],
                "teams": {"*": [{"channel": "hook"}]},
                "events": [
                    "ActionAwaitingManual",
                    "RequestCompleted",
                    "RequestFailed",
                    "RequestAborted",
                    "RequestEscalated",
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    env |= {
        "PAO_CONFIG_FILE": str(tmp / "devctl.yaml"),
        "PAO_LOG_FORMAT": "json",
        "PAO_JIRA_POLL_SECONDS": "0.3",
        "PAO_NOTIFICATIONS_FILE": str(routing),
        "COLUMNS": "200",
    }
    log = (tmp / "pao-up.log").open("wb")
    up = subprocess.Popen(
        [str(BIN / "pao"), "up", "--port", str(free_port()), "--data-dir", str(tmp / "state")],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack_file = tmp / "state" / "stack.json"
    deadline = time.monotonic() + 90
    while not stack_file.exists():
        assert up.poll() is None, (tmp / "pao-up.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "pao up did not come up"
        await asyncio.sleep(0.2)
    user = yaml.safe_load((tmp / "state" / "dev-key.yaml").read_text())["user"]
    try:
        yield Pao(json.loads(stack_file.read_text()), env, box, user)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        log.close()
        await runner.cleanup()


def devctl(pao: Pao, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "devctl"), "--profile", "local", *args],
        env=pao.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


async def until(probe: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(probe)
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


def status_of(pao: Pao, request_id: str) -> dict[str, Any]:
    done = devctl(pao, "-o", "json", "request", "status", request_id)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def kafka_history(pao: Pao, stream_id: str, count: int) -> list[tuple[int, str]]:
    settings = Settings(kafka_bootstrap=pao.stack["kafka"], kafka_enable_idempotence=False)
    consumer = make_consumer(settings, "pao.request.events", group_id=None)
    await consumer.start()
    seen: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    if record.key == stream_id.encode():
                        event = decode_record_value(record.value)
                        seen.append((event.stream_version, event.event_type))
    finally:
        await consumer.stop()
    return seen


@pytest.mark.parametrize("item", list(ITEMS))
async def test_each_item_is_requested_worked_in_jira_and_completed(
    pao: Pao, item: str, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(yaml.safe_dump(ITEMS[item]))
    submitted = devctl(
        pao, "-o", "json", "request", "submit", item, "--inputs", str(inputs), "--mode", "manual"
    )
    assert submitted.returncode == 0, submitted.stderr
    request_id = json.loads(submitted.stdout)["request_id"]

    async with aiohttp.ClientSession() as http:
        jira = JiraClient(pao.stack["jira"], session=http)
        for _ in range(2):  # until it completes (an item may have more than one ticket)
            current = await until(
                lambda: (
                    (s := status_of(pao, request_id))["status"] in ("awaiting_manual", "completed")
                    and s
                ),
                "the ticket to open",
            )
            if current["status"] == "completed":
                break
            action = next(a for a in current["actions"] if a["status"] == "awaiting_manual")
            issue = await jira.get_issue(action["outputs"]["key"])
            assert "shop" in issue.summary  # rendered from the inputs
            assert "{{" not in issue.summary + (issue.description or "")
            await jira.transition_to(issue.key, "Done")
            name = action["name"]

            def succeeded(name: str = name) -> bool:
                actions = status_of(pao, request_id)["actions"]
                return next(a for a in actions if a["name"] == name)["status"] == "succeeded"

            await until(succeeded, "the action to succeed")

    watched = devctl(pao, "request", "status", request_id, "--watch")
    assert watched.returncode == 0, watched.stderr + watched.stdout
    assert "completed" in watched.stdout

    def mailed() -> bool:
        return any(
            request_id in m["Subject"] and "has completed" in m.get_content()
            for m in pao.inbox.mails
        )

    await until(mailed, "the requester's e-mail")
    assert any(m["To"] == f"{pao.user}@localhost" for m in pao.inbox.mails)

    logs = devctl(pao, "request", "logs", request_id)
    assert logs.returncode == 0
    assert "request completed" in logs.stdout

    conn = await asyncpg.connect(pao.stack["database"])
    try:
        stored = [
            (r["stream_version"], r["event_type"])
            for r in await conn.fetch(
                "SELECT stream_version, event_type FROM events WHERE stream_id = $1 "
                "ORDER BY stream_version",
                f"request-{request_id}",
            )
        ]
    finally:
        await conn.close()
    on_kafka = await kafka_history(pao, f"request-{request_id}", len(stored))
    assert on_kafka == stored


async def test_the_owning_team_hears_of_an_escalation(pao: Pao, tmp_path: Path) -> None:
    submitted = devctl(
        pao,
        "-o",
        "json",
        "request",
        "submit",
        "postgresql-rds",
        "--set",
        "db_name=urgent",
        "--set",
        "environment=dev",
        "--set",
        "instance_size=small",
        "--set",
        "owner_email=u@example.com",
    )
    request_id = json.loads(submitted.stdout)["request_id"]
    await until(
        lambda: status_of(pao, request_id)["status"] == "awaiting_manual", "the ticket to open"
    )
    escalated = devctl(
        pao,
        "request",
        "escalate",
        request_id,
        "--reason",
        "launch tomorrow",
        "--urgency",
        "critical",
    )
    assert escalated.returncode == 0, escalated.stderr

    def team_told() -> bool:
        return any(
            h.get("event_type") == "RequestEscalated" and h.get("request_id") == request_id
            for h in pao.inbox.hooks
        )

    await until(team_told, "the team's webhook")
    aborted = devctl(pao, "request", "abort", request_id, "--reason", "not needed")
    assert aborted.returncode == 0
    watched = devctl(pao, "request", "status", request_id, "--watch")
    assert watched.returncode == 1  # aborted is not success
