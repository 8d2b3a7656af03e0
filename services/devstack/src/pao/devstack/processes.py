"""Child processes that die with their parent and stop in order."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If `pao up` is killed outright it cannot stop its children; the kernel then sends them
    # SIGTERM. Runs in the child after any uid change, so the setting survives it.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as `user` with only that user's group."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class ChildProcess:
    """A long-running child: started in its own process group, stopped with a signal."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        stop_signal: signal.Signals = signal.SIGTERM,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.env = env
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - argv built from trusted paths
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            **as_user(self.user),
            start_new_session=True,  # Ctrl-C reaches `pao up`, which stops children in order
            preexec_fn=_die_with_parent,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def answering(self, probe: str, timeout: float = 30.0) -> None:
        """Wait until `GET probe` answers 200; a child that exits, or is not answering within
        `timeout`, is stopped and the error carries the end of its log."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
                try:
                    async with session.get(probe) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    await self.stop()
                    raise RuntimeError(
                        f"{self.name} did not answer {probe} within {timeout:.0f} s:\n"
                        f"{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """Kill the child and everything it started at once (SIGKILL to its process group), as
        a crash or a power cut would."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def stop(self, timeout: float = 20.0) -> None:
        """Signal the child, wait up to `timeout`, then kill it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await asyncio.to_thread(self.process.wait)
        if self._log is not None:
            self._log.close()
            self._log = None
