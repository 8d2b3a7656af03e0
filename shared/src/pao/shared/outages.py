"""Telling an outage from a failure: the database or the broker being away for a while is a
reason to wait and try again, never a reason to give up on (or dead-letter) the work."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

#: Errors that say the database cannot be reached or is restarting, not that a statement is wrong.
DATABASE_AWAY: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # the connection broke or could not be made
    asyncpg.InterfaceError,  # a connection closed under a pool or a transaction
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InternalClientError,  # a connection left in a broken state when its server died
    ConnectionError,
    OSError,
    TimeoutError,
)

#: Errors that say the broker cannot be reached for the moment.
BROKER_AWAY: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def database_away(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable (or restarting) rather than a bug."""
    return isinstance(exc, DATABASE_AWAY)


def outage(exc: BaseException) -> bool:
    """Whether `exc` means the database or the broker is away: wait and try again."""
    return isinstance(exc, DATABASE_AWAY + BROKER_AWAY) or (
        isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
    )


class Backoff:
    """Growing waits between tries while something is away: doubles from `first` to `most`."""

    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self._first = first
        self._most = most
        self.next = first

    def __call__(self) -> float:
        """The wait before the next try."""
        wait = self.next
        self.next = min(self.next * 2, self._most)
        return wait

    def reset(self) -> None:
        self.next = self._first
