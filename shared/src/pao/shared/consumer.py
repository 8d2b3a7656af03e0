"""Consuming PAO's topics: in order per stream, each event applied once, failures dead-lettered.

A consumer reads every partition of its topics without a consumer group and keeps its offsets in
PostgreSQL; one instance per consumer name is active (advisory lock), others wait to take over.
Events of one stream (one Kafka key) are handled in order; different streams run concurrently.
Handlers are registered per event class; the consumer reads the topics of those classes'
categories, decodes each record once (through the upcasters) and hands the typed event to its
handler, with the envelope's metadata and the transaction's connection. Events of other types
pass by untouched. Each event runs inside `handle_once`, so a redelivery (the relay republishing
after a crash, or offsets saved late) changes nothing. An event whose handler keeps failing is sent
to the dead-letter topic with the reason, marked processed, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import pydantic
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from pao.contracts.envelope import EventEnvelope, NewEvent
from pao.contracts.events import REGISTRY, Event
from pao.contracts.topics import DEAD_LETTER_TOPIC, topic_for_category
from pao.shared.idempotency import handle_once
from pao.shared.kafka import make_consumer
from pao.shared.lifecycle import leadership
from pao.shared.relay import decode_record_value
from pao.shared.settings import Settings

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[E]):
    """One event handed to a handler: typed, with its stored metadata, inside the transaction
    that also records it as processed."""

    event: E
    envelope: EventEnvelope
    conn: asyncpg.Connection

    def caused(self, event: Event, *, actor: str) -> NewEvent:
        """`event` stamped as a consequence of this one (same correlation, caused by it)."""
        return event.new(
            correlation_id=self.envelope.correlation_id,
            causation_id=str(self.envelope.event_id),
            actor=actor,
        )


Handler = Callable[[Delivery[Any]], Awaitable[None]]
Handlers = Mapping[type[Event], Handler]

_SAVE_OFFSET = """
INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (consumer, topic, partition) DO UPDATE
SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()
"""


class EventConsumer:
    """Runs each event's handler once per event, in stream order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        name: str,
        handlers: Handlers,
        producer: AIOKafkaProducer | None = None,
        concurrency: int = 16,
        attempts: int = 3,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self.name = name
        self._handlers = {cls.event_type: handler for cls, handler in handlers.items()}
        self._topics = sorted({topic_for_category(cls.category) for cls in handlers})
        self._producer = producer
        self._slots = asyncio.Semaphore(concurrency)
        self._attempts = attempts
        self.handled = 0
        self.dead_lettered = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set (after taking the consumer's leader lock)."""
        async with leadership(self._pool, f"pao.consumer.{self.name}", stop) as leading:
            if leading:
                await self._consume(stop)

    async def _consume(self, stop: asyncio.Event) -> None:
        consumer = make_consumer(self._settings, group_id=None)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in sorted(await _partitions(consumer, topic))
            ]
            consumer.assign(partitions)
            stored = {
                (r["topic"], r["partition"]): r["next_offset"]
                for r in await self._pool.fetch(
                    "SELECT topic, partition, next_offset FROM consumer_offsets "
                    "WHERE consumer = $1",
                    self.name,
                )
            }
            for tp in partitions:
                if (tp.topic, tp.partition) in stored:
                    consumer.seek(tp, stored[(tp.topic, tp.partition)])
                else:
                    await consumer.seek_to_beginning(tp)
            log.info("consumer started", consumer=self.name, partitions=len(partitions))
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if batch:
                    await self._handle_batch(batch)
        finally:
            await consumer.stop()

    async def _handle_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        by_stream: dict[bytes, list[ConsumerRecord]] = defaultdict(list)
        for records in batch.values():
            for record in records:
                by_stream[record.key or b""].append(record)
        await asyncio.gather(*(self._handle_stream(records) for records in by_stream.values()))
        async with self._pool.acquire() as conn:
            for tp, records in batch.items():
                await conn.execute(
                    _SAVE_OFFSET, self.name, tp.topic, tp.partition, records[-1].offset + 1
                )

    async def _handle_stream(self, records: list[ConsumerRecord]) -> None:
        async with self._slots:
            for record in records:
                await self._handle_record(record)

    async def _handle_record(self, record: ConsumerRecord) -> None:
        try:
            envelope = decode_record_value(record.value)
        except (ValueError, TypeError) as exc:
            await self._dead_letter(record, None, f"undecodable record: {exc}")
            return
        handler = self._handlers.get(envelope.event_type)
        if handler is None:
            return
        try:
            event = REGISTRY.decode(envelope)
        except (KeyError, pydantic.ValidationError) as exc:
            await self._dead_letter(record, envelope, f"undecodable {envelope.event_type}: {exc}")
            return

        async def handle(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
            await handler(Delivery(event, envelope, conn))

        for attempt in range(1, self._attempts + 1):
            try:
                if await handle_once(
                    self._pool, consumer=self.name, event=envelope, handler=handle
                ):
                    self.handled += 1
                return
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if attempt == self._attempts:
                    log.exception(
                        "event dead-lettered",
                        consumer=self.name,
                        event_type=envelope.event_type,
                        event_id=str(envelope.event_id),
                    )
                    await self._dead_letter(record, envelope, reason)
                    return
                log.warning(
                    "event handler failed; retrying",
                    consumer=self.name,
                    event_type=envelope.event_type,
                    attempt=attempt,
                    error=reason,
                )
                await asyncio.sleep(0.2 * 2**attempt)

    async def _dead_letter(
        self, record: ConsumerRecord, event: EventEnvelope | None, reason: str
    ) -> None:
        self.dead_lettered += 1
        body: dict[str, Any] = {
            "consumer": self.name,
            "reason": reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "event": json.loads(record.value) if event is not None else None,
        }
        if self._producer is not None:
            await self._producer.send_and_wait(
                DEAD_LETTER_TOPIC,
                json.dumps(body, default=str).encode(),
                key=record.key,
                headers=[("consumer", self.name.encode()), ("reason", reason[:200].encode())],
            )
        if event is not None:
            await self._pool.execute(
                "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                self.name,
                event.event_id,
            )


async def _partitions(consumer: Any, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions; is it created?")
