"""The embedded JIRA server: jira820 in a child process on a free loopback port."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess

#: Projects the catalog's manual actions file tickets into: PLATFORM unless an item names its
#: team's own project.
DEFAULT_PROJECTS: tuple[str, ...] = ("PLATFORM", "PLAT", "DBA", "SEC", "DATA", "OPS")

#: The custom field tickets carry the request's correlation id in (PAO_JIRA_CORRELATION_FIELD).
CORRELATION_FIELD = "customfield_10100"
CORRELATION_FIELD_NAME = "PAO Correlation ID"


class EmbeddedJira:
    """A Jira Data Center REST v2 server on a free loopback port."""

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        projects: Sequence[str] = DEFAULT_PROJECTS,
        persist: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.projects = tuple(projects)
        argv = [
            sys.executable,
            "-m",
            "pao.devstack.jira_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--projects",
            ",".join(self.projects),
        ]
        if persist is not None:
            argv += ["--persist", str(persist)]
        self._child = ChildProcess("jira", argv, log_path=log_dir / "jira.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child.process else None

    async def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait until it answers `GET /rest/api/2/serverInfo`."""
        self._child.start()
        await self._child.answering(f"{self.base_url}/rest/api/2/serverInfo", timeout)
        return self.base_url

    async def stop(self) -> None:
        await self._child.stop()
