"""Relay figures: throughput store -> Kafka, and lag (append commit -> consumer) at 1,000 appends/s.

    uv run python bench/relay.py [--events 50000] [--rate 1000] [--seconds 10]

The throughput run publishes a pre-loaded backlog with an in-process relay. The lag run starts
the relay as its own process (`pao serve relay`), appends at a steady rate from 10 writers here,
and reads the topic here: lag = time a consumer sees the event - time its append returned.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from infra import broker, fresh_database, percentile
from pao.contracts.envelope import NewEvent
from pao.contracts.topics import ALL_TOPICS, topic_for_category
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore
from pao.shared.kafka import ensure_topics, make_consumer, make_producer
from pao.shared.relay import Relay, decode_record_value
from pao.shared.settings import Settings

BIN = Path(sys.executable).parent


async def preload(store: EventStore, events: int) -> None:
    per_stream = 100
    for _ in range(events // per_stream):
        batch = [NewEvent(event_type="BenchAppended", data={"i": i}) for i in range(per_stream)]
        await store.append(f"request-{uuid.uuid4().hex}", batch, 0)


async def throughput(settings: Settings, store: EventStore, events: int) -> float:
    await preload(store, events)
    producer = make_producer(settings)
    await producer.start()
    relay = Relay(store.pool, producer, name="bench-throughput", batch_size=5_000)
    await relay.load_checkpoint()
    started = time.perf_counter()
    while relay.published < events:
        await relay.publish_batch()
    elapsed = time.perf_counter() - started
    await producer.stop()
    return relay.published / elapsed


async def lag(settings: Settings, store: EventStore, rate: int, seconds: float) -> list[float]:
    env = {
        **os.environ,
        "PAO_DATABASE_URL": settings.database_url or "",
        "PAO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "PAO_RELAY_NAME": "bench-lag",
        "PAO_LOG_LEVEL": "warning",
    }
    # Start the relay at the end of the store: only the paced events count.
    await store.pool.execute(
        "INSERT INTO relay_checkpoints (name, transaction_id, global_position) "
        "SELECT 'bench-lag', max(transaction_id), max(global_position) FROM events"
    )
    relay = await asyncio.create_subprocess_exec(str(BIN / "pao"), "serve", "relay", env=env)
    consumer = make_consumer(settings, topic_for_category("request"), group_id=None)
    await consumer.start()
    await consumer.seek_to_end()
    # Wait until the relay process publishes, so its start-up is not counted as lag.
    marker = await store.append(f"request-{uuid.uuid4().hex}", [NewEvent(event_type="Mark")], 0)
    seen = False
    while not seen:
        for records in (await consumer.getmany(timeout_ms=100)).values():
            seen = seen or any(
                decode_record_value(r.value).event_id == marker[0].event_id for r in records
            )
    committed: dict[str, float] = {}
    lags: list[float] = []
    total = int(rate * seconds)
    writers = 10

    async def write(w: int) -> None:
        interval = writers / rate
        next_at = time.perf_counter()
        for _ in range(total // writers):
            next_at += interval
            e = NewEvent(event_type="BenchPaced", data={})
            await store.append(f"request-{uuid.uuid4().hex}", [e], 0)
            committed[str(e.event_id)] = time.perf_counter()
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def read() -> None:
        deadline = time.perf_counter() + seconds + 30
        while len(lags) < total and time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for r in records:
                    at = committed.get(str(decode_record_value(r.value).event_id))
                    if at is not None:
                        lags.append((now - at) * 1000)

    try:
        await asyncio.gather(read(), *(write(w) for w in range(writers)))
    finally:
        await consumer.stop()
        relay.terminate()
        await relay.wait()
    if len(lags) < total:
        print(f"warning: only {len(lags)} of {total} paced events were seen")
    return lags


async def main(events: int, rate: int, seconds: float) -> None:
    async with fresh_database() as dsn, broker() as bootstrap:
        settings = Settings(
            database_url=dsn, kafka_bootstrap=bootstrap, kafka_enable_idempotence=False
        )
        await ensure_topics(settings, ALL_TOPICS)
        pool = await create_pool(dsn, min_size=12, max_size=12)
        store = EventStore(pool)
        rate_out = await throughput(settings, store, events)
        lags = await lag(settings, store, rate, seconds)
        await pool.close()
    print(f"relay throughput: {rate_out:,.0f} events/s ({events:,} events, store -> Kafka)")
    print(
        f"relay lag at {rate:,} appends/s for {seconds:.0f} s ({len(lags):,} events): "
        f"p50 {percentile(lags, 50):.1f} ms, p99 {percentile(lags, 99):.1f} ms, "
        f"max {max(lags):.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate, args.seconds))
