"""`pao up` in a child process for end-to-end tests, driven through devctl like a person would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from botocore.credentials import ReadOnlyCredentials

from conftest import BIN, REPO
from pao.devctl.client import Target, sign
from pao.devctl.profiles import Profile, load_config, save_profile
from pao.devstack.ports import free_port


@dataclass(frozen=True)
class Person:
    """Someone with their own key, signing in as a devctl profile of the same name."""

    profile: str
    user: str
    teams: tuple[str, ...]
    access_key_id: str
    secret_access_key: str


@dataclass
class UpStack:
    """A running `pao up`: what its stack.json says, devctl's environment, its log."""

    info: dict[str, Any]
    env: dict[str, str]
    log: Path

    def devctl(
        self, *args: str, profile: str = "local", timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "devctl"), "--profile", profile, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def json(self, *args: str, profile: str = "local", timeout: float = 180) -> Any:
        """devctl's JSON answer; the command must succeed."""
        done = self.devctl("-o", "json", *args, profile=profile, timeout=timeout)
        assert done.returncode == 0, f"{done.stderr}\n{self.log_tail()}"
        return json.loads(done.stdout)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    async def status(self, request_id: str, *wanted: str, timeout: float = 90) -> dict[str, Any]:
        """Poll the request until it reaches one of `wanted` (a terminal status it should not
        have reached fails at once). Polled with devctl's own client, signed as the `local`
        profile, in this process: a devctl process per poll would cost more than the poll."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.call("GET", f"/requests/{request_id}/status")
            if found["status"] in wanted:
                return found
            assert found["status"] not in ("completed", "failed", "aborted"), (
                f"{found}\n{self.log_tail()}"
            )
            assert time.monotonic() < deadline, (
                f"{request_id} is {found['status']}, not {' or '.join(wanted)}\n{self.log_tail()}"
            )
            await asyncio.sleep(0.3)

    async def call(self, method: str, path: str, profile: str = "local") -> Any:
        """One signed call to the gateway as `profile`, as devctl signs it; its JSON answer."""
        chosen = load_config(Path(self.env["PAO_CONFIG_FILE"])).profiles[profile]
        assert chosen.access_key_id, profile
        assert chosen.secret_access_key, profile
        credentials = ReadOnlyCredentials(chosen.access_key_id, chosen.secret_access_key, None)
        target = Target(self.info["gateway"], chosen.region or "us-east-1", credentials)
        url = f"{self.info['gateway']}/api/v1{path}"
        headers = sign(target, method, url, b"", {"Accept": "application/json"})
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.request(method, url, headers=headers)
        assert answer.status_code < 400, answer.text
        return answer.json()


@contextlib.asynccontextmanager
async def portal_session(stack: UpStack, profile: str) -> AsyncIterator[tuple[Any, str]]:
    """A browser's HTTP session signed in to the portal through `devctl portal --print` as
    `profile`, and the CSRF token its pages carry (for pages read without a real browser)."""
    import aiohttp

    done = stack.devctl("portal", "--print", profile=profile)
    assert done.returncode == 0, done.stderr
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(done.stdout.strip()) as signed_in:
            assert signed_in.status == 200, await signed_in.text()
        async with browser.get(f"{stack.info['gateway']}/portal/catalog") as page:
            found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', await page.text())
        assert found, "the portal's page carries no CSRF token"
        yield browser, found.group(1)


@contextlib.asynccontextmanager
async def pao_up(
    tmp: Path,
    *,
    people: tuple[Person, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> AsyncIterator[UpStack]:
    """Start `pao up` on embedded parts in `tmp`, with a devctl profile per person; Ctrl-C at
    the end, as a person would."""
    keys = tmp / "keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            [
                {
                    "access_key_id": p.access_key_id,
                    "secret_access_key": p.secret_access_key,
                    "user": p.user,
                    "teams": list(p.teams),
                }
                for p in people
            ]
        )
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    child_env |= {
        "PAO_CONFIG_FILE": str(tmp / "devctl.yaml"),
        "PAO_LOG_FORMAT": "json",
        "PAO_KEYS_FILE": str(keys),
        "COLUMNS": "200",
        **(env or {}),
    }
    log_path = tmp / "pao-up.log"
    log = log_path.open("wb")
    up = subprocess.Popen(
        [str(BIN / "pao"), "up", "--port", str(free_port()), "--data-dir", str(tmp / "state")],
        env=child_env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        stack_file = tmp / "state" / "stack.json"
        deadline = time.monotonic() + timeout
        while not stack_file.exists():
            assert up.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "pao up did not come up"
            await asyncio.sleep(0.2)
        info = json.loads(stack_file.read_text())
        for person in people:
            save_profile(
                person.profile,
                Profile(
                    endpoint=info["gateway"],
                    region="us-east-1",
                    access_key_id=person.access_key_id,
                    secret_access_key=person.secret_access_key,
                ),
                make_default=False,
                path=tmp / "devctl.yaml",
            )
        yield UpStack(info, child_env, log_path)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(timeout=10)
        log.close()


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    """The first truthy answer of `probe`, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
