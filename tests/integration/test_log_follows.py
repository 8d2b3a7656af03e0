"""Following a request's log is bounded: streams per user and per gateway, and their length."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import pytest_asyncio
from test_devctl import devctl, profile_file
from test_request_flow import POSTGRES, people, status_becomes, submit  # noqa: F401

from conftest import ADMIN, DANA, REPO, fresh_database, signed_client
from pao.devctl.client import sign
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request", "fulfillment")
MAX_SECONDS = 4.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    people: KeyStore,  # noqa: F811
    jira_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.2,
                "catalog_dir": REPO / "catalog",
                "log_follows_per_user": 2,
                "log_follows_total": 3,
                "log_follow_max_seconds": MAX_SECONDS,
            }
        )
        async with running_stack(
            own, people, services=SERVICES, data_dir=tmp_path_factory.mktemp("follows")
        ) as running:
            yield running


async def waiting_request(stack: Stack, name: str) -> str:
    """A request that waits on its JIRA ticket, so its log stream stays open."""
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": name})
    await status_becomes(stack, request_id, "awaiting_manual")
    return request_id


def follow_url(stack: Stack, request_id: str) -> str:
    return f"{stack.url}/api/v1/requests/{request_id}/logs?follow=true"


@contextlib.asynccontextmanager
async def following(stack: Stack, request_id: str, key: tuple[str, str]) -> AsyncIterator[None]:
    """Hold a log stream open (its first entry arrived) while the block runs."""
    client = signed_client(stack.url, *key)
    lines = client.stream_lines(f"/requests/{request_id}/logs", params={"follow": "true"})
    try:
        first = await asyncio.to_thread(next, lines)
        assert first.startswith(("id: ", "event: "))
        yield
    finally:
        lines.close()
        client.close()


async def follow_once(stack: Stack, request_id: str, key: tuple[str, str]) -> httpx.Response:
    """One more follow, read as a plain HTTP answer (headers and all), then closed."""
    client = signed_client(stack.url, *key)
    url = follow_url(stack, request_id)
    headers = sign(client.target, "GET", url, b"", {"Accept": "text/event-stream"})
    client.close()
    async with httpx.AsyncClient(timeout=30) as http, http.stream("GET", url, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
        return r


async def accepted_again(stack: Stack, request_id: str, key: tuple[str, str]) -> None:
    """Poll (with a deadline) until the gateway counts the closed streams out."""
    deadline = time.monotonic() + 10
    while (await follow_once(stack, request_id, key)).status_code != 200:
        assert time.monotonic() < deadline, "the closed streams were never counted out"
        await asyncio.sleep(0.1)


async def test_a_user_holds_a_bounded_number_of_log_streams(stack: Stack) -> None:
    request_id = await waiting_request(stack, "followed")

    async with following(stack, request_id, DANA), following(stack, request_id, DANA):
        refused = await follow_once(stack, request_id, DANA)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "PAO-REQ-007"
        assert int(refused.headers["Retry-After"]) > 0
        # Another user is not held back by dana's streams.
        async with following(stack, request_id, ADMIN):
            # ...but the gateway as a whole is: three streams are open, the admin holds one.
            refused = await follow_once(stack, request_id, ADMIN)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "PAO-REQ-007"

    await accepted_again(stack, request_id, DANA)


async def test_a_log_stream_ends_after_its_longest_duration(stack: Stack) -> None:
    request_id = await waiting_request(stack, "timed")
    client = signed_client(stack.url, *DANA)
    started = time.monotonic()

    def read_all() -> list[str]:
        return list(client.stream_lines(f"/requests/{request_id}/logs", params={"follow": "true"}))

    try:
        lines = await asyncio.wait_for(asyncio.to_thread(read_all), timeout=MAX_SECONDS + 20)
    finally:
        client.close()

    assert time.monotonic() - started >= MAX_SECONDS - 0.5
    assert "event: log" in lines
    assert "event: end" not in lines  # the request still waits; the stream just closed
    assert ": the stream has lasted its most; reconnect" in lines


async def test_devctl_keeps_following_across_streams_until_the_request_ends(
    stack: Stack, jira_url: str, tmp_path: Path
) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "longrun"})
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    key = waiting["actions"][0]["outputs"]["key"]
    config = profile_file(tmp_path, stack.url)
    following = asyncio.create_task(devctl("request", "logs", request_id, "-f", config=config))
    # Past the stream's longest duration: devctl must have followed again by now.
    await asyncio.sleep(MAX_SECONDS + 1.5)
    assert not following.done()
    async with aiohttp.ClientSession() as session:
        await JiraClient(jira_url, session=session).transition_to(key, "Done")

    code, out, err = await following

    assert code == 0, err
    assert "-- request completed" in out
    lines = out.splitlines()
    assert len(lines) == len(set(lines))  # the next stream resumed after the last entry seen
    assert "dana requested PostgreSQL on Amazon RDS" in lines[0]


async def test_a_log_stream_is_woken_by_a_new_entry_not_by_polling(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pao.gateway import requests as routes

    # Polling alone would read the log again only after a minute.
    monkeypatch.setattr(routes, "_FOLLOW_POLL", 60.0)
    monkeypatch.setattr(routes, "_FOLLOW_POLL_MAX", 60.0)
    monkeypatch.setattr(stack.settings, "log_follow_max_seconds", 60.0)
    request_id = await waiting_request(stack, "woken")
    client = signed_client(stack.url, *DANA)
    url = follow_url(stack, request_id)
    headers = sign(client.target, "GET", url, b"", {"Accept": "text/event-stream"})
    entries = await asyncio.to_thread(client.request, "GET", f"/requests/{request_id}/logs")
    last = entries["entries"][-1]["seq"]
    seen: list[str] = []

    async def read_until(lines: AsyncIterator[str], wanted: str) -> bool:
        async for line in lines:
            seen.append(line)
            if wanted in line:
                return True
        return False

    try:
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream("GET", url, headers=headers) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            # The entries so far arrive at once; then the stream waits.
            assert await asyncio.wait_for(read_until(lines, f"id: {last}"), timeout=10), seen
            await asyncio.to_thread(
                client.request,
                "POST",
                f"/requests/{request_id}/escalate",
                body={"reason": "the launch is tomorrow"},
            )
            started = time.monotonic()
            woken = await asyncio.wait_for(read_until(lines, "the launch is tomorrow"), timeout=10)
            woken_after = time.monotonic() - started
    finally:
        client.close()
    assert woken, seen
    assert woken_after < 10, seen
