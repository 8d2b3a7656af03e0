"""What the services of one process share while they run, and how they are stopped.

Each service's `bootstrap` takes a `Scope` and starts its parts in it; `pao serve` and `pao up`
make one scope per process and hand it to the services they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from pao.shared.consumer import EventConsumer, Handlers
from pao.shared.eventstore import EventStore
from pao.shared.kafka import make_producer
from pao.shared.settings import Settings

log = structlog.get_logger(__name__)

#: This process among the instances of its services: host and process id.
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Scope:
    """One process's settings, database pool and event store, its running tasks and the
    clean-ups that end them, and the clients its services share (made on first use)."""

    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _producer: AIOKafkaProducer | None = None

    def spawn(self, name: str, coroutine: Awaitable[None]) -> None:
        """Run `coroutine` until the scope stops; its failure stops the process."""
        self.tasks.append(asyncio.create_task(coroutine, name=name))  # type: ignore[arg-type]

    async def session(self) -> aiohttp.ClientSession:
        """The process's HTTP client session."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self.cleanups.append(self._session.close)
        return self._session

    async def producer(self) -> AIOKafkaProducer:
        """The process's Kafka producer."""
        if self._producer is None:
            producer = make_producer(self.settings)
            await producer.start()
            self.cleanups.append(producer.stop)
            self._producer = producer
        return self._producer

    async def consume(self, name: str, handlers: Handlers) -> EventConsumer:
        """Run a consumer named `name` with these handlers."""
        consumer = EventConsumer(
            self.pool,
            self.settings,
            name=name,
            handlers=handlers,
            producer=await self.producer(),
            instance=INSTANCE,
        )
        self.spawn(name, consumer.run(self.stop))
        return consumer

    async def close(self) -> None:
        """Stop every task (each gets a moment to finish), then run the clean-ups."""
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()

    async def until_stopped_or_failed(self) -> None:
        """Wait for `stop`, or raise what ended a task first."""
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait([stopper, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("service failed", service=task.get_name(), error=repr(task.exception()))
                raise task.exception()  # type: ignore[misc]
