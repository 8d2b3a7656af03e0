"""Log streams (`GET /requests/{id}/logs?follow=true`): how many a gateway holds open, and
what wakes them.

Each stream holds a connection until its request ends, which may be never; without a bound, one
caller could open streams until the gateway or the database gives out. A stream counts from its
start until it closes, per user and in total.

A stream reads the read model when the projector says the request's log or status changed: the
projector's tables notify `pao_request_log` with the request id (migration 0004 of the request
service), and one listening connection per gateway wakes the streams of that request. While the
listener is down (the database restarting) the streams poll, and they re-read every
`RECHECK_SECONDS` in any case. The same connection carries the channels other parts of the
gateway listen to (`also_listen`: the read versions of `pao.gateway.caching`); it proves itself
alive every `HEARTBEAT_SECONDS`, so a connection that died silently is not trusted for long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import asyncpg
import structlog

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.shared.database_access import DatabaseAccess

log = structlog.get_logger("pao.gateway.follows")

CHANNEL = "pao_request_log"
#: A woken stream still re-reads this often, in case a notification was missed.
RECHECK_SECONDS = 15.0
#: How long the listener waits before connecting again after losing its connection.
RECONNECT_SECONDS = 2.0
#: How often the listener checks that its connection still answers.
HEARTBEAT_SECONDS = 5.0

#: What a refused caller is told to wait: streams end when their request does, or time out.
RETRY_AFTER_SECONDS = 10


class LogFollows:
    """The open log streams, per user and in total, each bounded."""

    def __init__(self, *, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._by_user: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._by_user.values())

    @contextlib.contextmanager
    def held(self, user: str) -> Iterator[None]:
        """Count one stream of `user` while the block runs; PaoError (429) past a bound."""
        if self.open >= self.total:
            raise self._refused("the gateway", self.total)
        if self._by_user[user] >= self.per_user:
            raise self._refused("you", self.per_user)
        self._by_user[user] += 1
        try:
            yield
        finally:
            self._by_user[user] -= 1
            if self._by_user[user] <= 0:
                del self._by_user[user]

    @staticmethod
    def _refused(who: str, bound: int) -> PaoError:
        return PaoError(
            errors.TOO_MANY_LOG_FOLLOWS,
            f"{who} already follow{'s' if who == 'the gateway' else ''} {bound} log streams, "
            "the most allowed",
            details=[ErrorDetail(field="follow", message=f"at most {bound} at once")],
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class LogWakeups:
    """One LISTEN connection that wakes the streams of a request when its log changes."""

    def __init__(self, dsn: str | None, *, access: DatabaseAccess | None = None) -> None:
        self._dsn = dsn
        self._access = access or DatabaseAccess()
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._also: list[tuple[str, Callable[[str], None], Callable[[], None]]] = []

    @property
    def listening(self) -> bool:
        """Notifications arrive; when False, streams poll."""
        return self._connection is not None and not self._connection.is_closed()

    def also_listen(
        self, channel: str, deliver: Callable[[str], None], *, reset: Callable[[], None]
    ) -> None:
        """Hand `channel`'s payloads to `deliver` too (register before `start`); `reset` runs
        each time the connection is made or lost: what was sent meanwhile was missed."""
        self._also.append((channel, deliver, reset))

    async def start(self) -> None:
        if self._dsn:
            self._task = asyncio.create_task(self._run(), name="log-wakeups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    @contextlib.contextmanager
    def watching(self, request_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the request's log or status changes, while the block runs."""
        woken = asyncio.Event()
        self._waiters[request_id].add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters[request_id]
            waiters.discard(woken)
            if not waiters:
                del self._waiters[request_id]

    def _notified(self, _conn: object, _pid: int, _channel: str, request_id: str) -> None:
        for woken in self._waiters.get(request_id, ()):
            woken.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for woken in waiters:
                woken.set()

    async def _run(self) -> None:
        assert self._dsn is not None
        while True:
            try:
                self._lost.clear()
                connection = await self._access.connect(self._dsn, timeout=10)
                connection.add_termination_listener(lambda _conn: self._lost.set())
                await connection.add_listener(CHANNEL, self._notified)
                for channel, deliver, _ in self._also:
                    await connection.add_listener(channel, _payload_to(deliver))
                self._connection = connection
                # What changed while nobody listened is read now.
                self._reset_others()
                self._wake_all()
                await self._alive(connection)
                log.warning("log stream listener lost its connection; streams poll meanwhile")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("log stream listener cannot connect", error=type(exc).__name__)
            await self._close()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _alive(self, connection: asyncpg.Connection) -> None:
        """Return when the connection is lost; raise when it stops answering."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), HEARTBEAT_SECONDS)
            if not self._lost.is_set():
                await connection.fetchval("SELECT 1", timeout=HEARTBEAT_SECONDS)

    def _reset_others(self) -> None:
        for _, _, reset in self._also:
            reset()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        self._reset_others()
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)


def _payload_to(deliver: Callable[[str], None]) -> Callable[[object, int, str, str], None]:
    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        deliver(payload)

    return notified
