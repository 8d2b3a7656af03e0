"""The fulfilment worker: claims due jobs and runs each through its step, a bounded number at once.

Any number of workers run side by side: each claims jobs with SKIP LOCKED under a lease it renews
while they run, and takes over jobs whose lease ran out. Transient failures are retried with
exponential backoff and jitter up to the action's policy; while a system's breaker is open its
jobs are parked, so an outage delays work instead of failing it; while the database is away the
worker waits for it. A step that fails unexpectedly is tried again later; nothing is lost.
"""

from __future__ import annotations

import asyncio

import structlog

from pao.fulfillment import jobs
from pao.fulfillment.steps import Parts, run_job
from pao.shared.lifecycle import pause
from pao.shared.outages import Backoff, outage
from pao.shared.runtime import INSTANCE

log = structlog.get_logger(__name__)

_UNEXPECTED_RETRY_SECONDS = 30.0


class Worker:
    """Claims due jobs and runs them, `concurrency` at a time, each under a renewed lease."""

    def __init__(
        self, parts: Parts, *, concurrency: int = 8, lease: float = 30.0, idle: float = 0.05
    ) -> None:
        self._parts = parts
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._lease = lease
        self._idle = idle
        self._running: dict[asyncio.Task[None], jobs.Job] = {}
        self.done = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop`; wait out a database outage."""
        renewing = asyncio.create_task(self._renew(stop))
        backoff = Backoff(0.2, 5.0)
        try:
            while not stop.is_set():
                free = self._concurrency - len(self._running)
                try:
                    claimed = (
                        await jobs.claim(self._parts.pool, free, lease=self._lease, worker=INSTANCE)
                        if free
                        else []
                    )
                    backoff.reset()
                except Exception as exc:  # noqa: BLE001 - the worker waits and goes on
                    wait = backoff()
                    (log.warning if outage(exc) else log.exception)(
                        "job queue unreachable; waiting", error=str(exc), retry_in=wait
                    )
                    await pause(stop, wait)
                    continue
                for job in claimed:
                    task = asyncio.create_task(self._guarded(job))
                    self._running[task] = job
                    task.add_done_callback(self._running.pop)
                if not claimed:
                    await pause(stop, self._idle)
        finally:
            if self._running:
                await asyncio.wait(list(self._running), timeout=30)
            renewing.cancel()

    async def _renew(self, stop: asyncio.Event) -> None:
        """Keep the leases of running jobs alive (a long Terraform apply outlives one lease)."""
        while not await pause(stop, self._lease / 3):
            claims = [job.claim for job in self._running.values()]
            try:
                await jobs.renew(self._parts.pool, claims, lease=self._lease)
            except Exception as exc:  # noqa: BLE001 - a lease lost meanwhile is fenced anyway
                log.warning("job leases not renewed", error=str(exc))

    async def run_due(self) -> int:
        """Run every job due now, once (for tests and tools); return how many ran."""
        claimed = await jobs.claim(self._parts.pool, 1_000, lease=self._lease)
        await asyncio.gather(*(self._guarded(job) for job in claimed))
        return len(claimed)

    async def _guarded(self, job: jobs.Job) -> None:
        async with self._slots:
            structlog.contextvars.bind_contextvars(request_id=job.request_id, action=job.action)
            try:
                await run_job(self._parts, job)
                self.done += 1
            except jobs.LeaseLost:
                log.info("job taken over by another worker; its result here is dropped")
            except Exception as exc:
                if outage(exc):
                    log.warning("job interrupted by an outage; it runs again", kind=job.kind)
                else:
                    log.exception("job failed unexpectedly; retrying later", kind=job.kind)
                try:
                    await jobs.reschedule(
                        self._parts.pool,
                        job,
                        delay=1.0 if outage(exc) else _UNEXPECTED_RETRY_SECONDS,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                except Exception as again:  # noqa: BLE001 - the lease runs out; another claim
                    log.warning("job left to its lease", error=str(again))
            finally:
                structlog.contextvars.unbind_contextvars("request_id", "action")
