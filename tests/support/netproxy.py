"""A TCP proxy between PAO and a server, to make that server slow or unreachable on demand."""

from __future__ import annotations

import asyncio
import contextlib

from pao.devstack.ports import free_port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; can go down, or hold answers back for a while."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.answer_delay = 0.0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        """Accept connections (again)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._link, "127.0.0.1", self.port, reuse_address=True
            )

    async def down(self) -> None:
        """Refuse new connections and cut the open ones: the target looks unreachable."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._links.discard(task)
            return
        asked = asyncio.Event()  # set when the client sent something not yet answered
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer, asked, request=True),
                self._pipe(upstream_reader, writer, asked, request=False),
            )
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            for w in (writer, upstream_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._links.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        asked: asyncio.Event,
        *,
        request: bool,
    ) -> None:
        while data := await reader.read(65536):
            if request:
                asked.set()
            elif asked.is_set() and self.answer_delay:
                asked.clear()  # hold each answer back once, not each of its chunks
                await asyncio.sleep(self.answer_delay)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.write_eof()
