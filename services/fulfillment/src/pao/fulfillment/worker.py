"""The fulfilment worker: claims due jobs and runs each through its step, a bounded number at once.

Transient failures are retried with exponential backoff and jitter up to the action's policy;
while a system's breaker is open its jobs are parked, so an outage delays work instead of failing
it. A step that fails unexpectedly is tried again later; nothing is lost.
"""

from __future__ import annotations

import asyncio

import structlog

from pao.fulfillment import jobs
from pao.fulfillment.steps import STEPS, Parts
from pao.shared.lifecycle import pause

log = structlog.get_logger(__name__)

_UNEXPECTED_RETRY_SECONDS = 30.0


class Worker:
    """Claims due jobs and runs them, `concurrency` at a time."""

    def __init__(self, parts: Parts, *, concurrency: int = 8, idle: float = 0.05) -> None:
        self._parts = parts
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._idle = idle
        self._running: set[asyncio.Task[None]] = set()
        self.done = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop`; jobs left running by a dead worker are taken up again first."""
        released = await jobs.release_abandoned(self._parts.pool)
        if released:
            log.warning("jobs of a stopped worker resumed", jobs=released)
        while not stop.is_set():
            free = self._concurrency - len(self._running)
            claimed = await jobs.claim(self._parts.pool, free) if free else []
            for job in claimed:
                task = asyncio.create_task(self._guarded(job))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if not claimed:
                await pause(stop, self._idle)
        if self._running:
            await asyncio.wait(self._running, timeout=30)

    async def run_due(self) -> int:
        """Run every job due now, once (for tests and tools); return how many ran."""
        claimed = await jobs.claim(self._parts.pool, 1_000)
        await asyncio.gather(*(self._guarded(job) for job in claimed))
        return len(claimed)

    async def _guarded(self, job: jobs.Job) -> None:
        async with self._slots:
            structlog.contextvars.bind_contextvars(request_id=job.request_id, action=job.action)
            try:
                await STEPS[job.kind](self._parts, job)
                self.done += 1
            except Exception as exc:
                log.exception("job failed unexpectedly; retrying later", kind=job.kind)
                await jobs.reschedule(
                    self._parts.pool,
                    job,
                    delay=_UNEXPECTED_RETRY_SECONDS,
                    error=f"{type(exc).__name__}: {exc}",
                )
            finally:
                structlog.contextvars.unbind_contextvars("request_id", "action")
