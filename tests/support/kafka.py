"""Reading what the relay published."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from pao.shared.kafka import make_consumer
from pao.shared.settings import Settings


class TopicReader:
    """A group-less consumer reading every partition of the topics from the start."""

    def __init__(self, settings: Settings, *topics: str) -> None:
        self._consumer: AIOKafkaConsumer = make_consumer(settings, *topics, group_id=None)
        self.records: list[ConsumerRecord] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def collect_until(
        self, done: Callable[[list[ConsumerRecord]], bool], *, timeout: float = 30.0
    ) -> list[ConsumerRecord]:
        """Read until `done(records)` holds, or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s; {len(self.records)} records read"
                )
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(records)
        return self.records

    async def drain(self, seconds: float) -> list[ConsumerRecord]:
        """Keep reading for `seconds` (to show that nothing more arrives)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend(records)
        return self.records
