"""One circuit breaker per external system, and the one wrapper every call goes through.

A system that keeps failing transiently is out, not the action that called it: while its breaker
is open, calls do not reach it and their work is parked (`Parked`), to run again when the
breaker may let a trial call through, without using up an attempt.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from pao.fulfillment.executors import ActionError
from pao.shared import metrics


class Parked(Exception):
    """The system is out; the work waits `wait` seconds without losing an attempt."""

    def __init__(self, system: str, wait: float) -> None:
        super().__init__(f"{system} breaker open")
        self.system = system
        self.wait = wait


class Breakers:
    """Breakers by system name: opened by `threshold` transient failures, for `open_seconds`."""

    def __init__(self, *, threshold: int = 5, open_seconds: float = 30.0) -> None:
        self._open_seconds = open_seconds
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=open_seconds,
            exclude=[(ActionError, lambda exc: not exc.transient)],
        )

    def _parked(self, system: str, opened_at: float | None) -> Parked:
        opened = opened_at or time.time()
        return Parked(system, max(0.5, opened + self._open_seconds - time.time()))

    @contextlib.asynccontextmanager
    async def guard(self, system: str) -> AsyncIterator[None]:
        """Run the block as a call to `system`: raises Parked while its breaker is open, and
        when this failure opened it (or a trial call found the system still down)."""
        breaker = await self._factory.get_breaker(system)
        try:
            async with breaker:
                yield
        except OpenedState as exc:
            raise self._parked(system, exc.opened_at) from exc
        except ActionError as exc:
            if exc.transient and breaker.context.state == "opened":
                raise self._parked(system, breaker.context.opened_at) from exc
            raise
        finally:
            state = metrics.BREAKER_STATES.get(breaker.context.state, 2)
            metrics.BREAKER_STATE.labels(system=system).set(state)
