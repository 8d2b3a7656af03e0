"""Consumers: PAO's group consumer against a FastStream subscriber and the simplest loop, on the
same events and the same transactional work, in one run.

    uv run python bench/consumers.py [--events 3000] [--streams 300]

Events (`ManualTicketUpdated`, as the relay publishes them: key = stream id, headers, envelope as
JSON) are put on `pao.request.events` of a fresh broker first; then each consumer, in its own
consumer group, drains them all from the start. For every event each does the same work in
PostgreSQL: `handle_once` (the processed mark and one effect row, in one transaction).

- pao: `pao.shared.consumer.EventConsumer` (batches, one stream's events in order, streams
  concurrently, partition claims checked in each transaction, offsets saved per batch).
- faststream: a FastStream `KafkaBroker` subscriber in its own group (`group_id`, manual
  acknowledgement since offsets live in PostgreSQL, `max_workers=3`: FastStream runs one group
  member per worker, so one per partition), one message per handler call, the body decoded by
  FastStream, the idiomatic typed-handler way.
- floor: one aiokafka consumer, records handled one after another, nothing else.

Printed: the time to join the group and see the first event, and events/s over the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from infra import broker, fresh_database
from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.contracts.topics import ALL_TOPICS
from pao.shared.consumer import Delivery, EventConsumer
from pao.shared.database import create_pool
from pao.shared.idempotency import handle_once
from pao.shared.kafka import ensure_topics, make_producer
from pao.shared.relay import decode_record_value, encode_envelope, record_headers
from pao.shared.settings import Settings

TOPIC = "pao.request.events"


async def publish(settings: Settings, events: int, streams: int) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        sends = []
        for n in range(events):
            event = ev.ManualTicketUpdated(request_id="r", action="a", key="K-1", comment=str(n))
            envelope = EventEnvelope(
                event_id=uuid.uuid4(),
                event_type=event.event_type,
                schema_version=1,
                stream_id=f"request-{n % streams}",
                stream_version=n // streams + 1,
                global_position=n + 1,
                occurred_at=datetime.now(UTC),
                data=event.model_dump(mode="json"),
            )
            sends.append(
                await producer.send(
                    TOPIC,
                    encode_envelope(envelope),
                    key=envelope.stream_id.encode(),
                    headers=record_headers(envelope),
                )
            )
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def effect(conn: asyncpg.Connection, event_id: uuid.UUID) -> None:
    await conn.execute("INSERT INTO bench_effects (event_id) VALUES ($1)", event_id)


class Clock:
    """When the first event was seen and when the last one was."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.started = time.perf_counter()
        self.first: float | None = None
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.count += 1
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if self.count >= self.total:
            self.last = now
            self.done.set()

    def report(self, name: str) -> str:
        assert self.first is not None
        drain = self.last - self.first
        return (
            f"{name:>10}: first event {self.first - self.started:5.2f} s after start, "
            f"{self.total:,} events in {drain:5.2f} s = {self.total / drain:,.0f} events/s"
        )


async def run_pao(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> None:
    async def handler(delivery: Delivery[ev.ManualTicketUpdated]) -> None:
        await effect(delivery.conn, delivery.envelope.event_id)
        clock.tick()

    consumer = EventConsumer(
        pool, settings, name=f"bench-pao-{uuid.uuid4().hex[:6]}", handlers={
            ev.ManualTicketUpdated: handler
        }
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await clock.done.wait()
    stop.set()
    await task


async def run_faststream(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> None:
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker, KafkaMessage

    name = f"bench-fs-{uuid.uuid4().hex[:6]}"
    stream_broker = KafkaBroker(settings.kafka_bootstrap or "", logger=None)

    @stream_broker.subscriber(
        TOPIC,
        group_id=name,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        max_workers=3,  # one group member per worker: more than the partitions would idle
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    async def handle(body: dict[str, Any], message: KafkaMessage) -> None:
        envelope = EventEnvelope.model_validate(body)
        ev.decode(envelope)

        async def work(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
            await effect(conn, envelope.event_id)

        await handle_once(pool, consumer=name, event=envelope, handler=work)
        clock.tick()

    await stream_broker.start()
    try:
        await clock.done.wait()
    finally:
        await stream_broker.stop()


async def run_floor(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> None:
    name = f"bench-floor-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    await consumer.start()

    async def work(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
        await effect(conn, envelope.event_id)

    try:
        while not clock.done.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    envelope = decode_record_value(record.value)
                    ev.decode(envelope)
                    await handle_once(pool, consumer=name, event=envelope, handler=work)
                    clock.tick()
    finally:
        await consumer.stop()


async def main(events: int, streams: int) -> None:
    async with fresh_database() as dsn, broker() as bootstrap:
        settings = Settings(
            database_url=dsn,
            kafka_bootstrap=bootstrap,
            kafka_enable_idempotence=False,
            kafka_session_timeout_ms=6_000,
            kafka_heartbeat_interval_ms=500,
            kafka_rebalance_timeout_ms=6_000,
        )
        await ensure_topics(settings, ALL_TOPICS)
        pool = await create_pool(dsn, min_size=2, max_size=20, application_name="bench")
        try:
            await pool.execute("CREATE TABLE bench_effects (event_id uuid NOT NULL)")
            await publish(settings, events, streams)
            print(f"{events:,} events on {streams} streams, 3 partitions; one transaction each")
            for name, run in (
                ("pao", run_pao),
                ("faststream", run_faststream),
                ("floor", run_floor),
            ):
                clock = Clock(events)
                await run(pool, settings, clock)
                print(clock.report(name), flush=True)
        finally:
            await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3_000)
    parser.add_argument("--streams", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.streams))
