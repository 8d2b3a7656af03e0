"""The event consumer: in order per stream, once per event, a poison event dead-lettered."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from pao.contracts import events as ev
from pao.contracts.topics import DEAD_LETTER_TOPIC
from pao.shared.consumer import Delivery, EventConsumer
from pao.shared.eventstore import EventStore
from pao.shared.kafka import make_producer
from pao.shared.relay import Relay
from pao.shared.settings import Settings
from support import eventually
from support.kafka import TopicReader

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_failing_event_is_dead_lettered_and_the_stream_goes_on(
    store: EventStore, pool: asyncpg.Pool, settings: Settings
) -> None:
    stream = f"request-{uuid.uuid4().hex}"
    name = f"test-consumer-{uuid.uuid4().hex[:8]}"
    request_id = stream.removeprefix("request-")

    def probe(n: int) -> ev.ManualTicketUpdated:
        return ev.ManualTicketUpdated(request_id=request_id, action="a", key="K-1", comment=str(n))

    appended = await store.append(stream, [probe(n).new() for n in (1, 2, 3)], 0)
    seen: list[int] = []

    async def handle(delivery: Delivery[ev.ManualTicketUpdated]) -> None:
        if delivery.envelope.stream_id != stream:
            return
        if delivery.event.comment == "2":
            raise ValueError("this event cannot be handled")
        seen.append(int(delivery.event.comment))

    producer = make_producer(settings)
    await producer.start()
    stop = asyncio.Event()
    relay = Relay(pool, producer, name=f"test-{uuid.uuid4().hex[:8]}")
    consumer = EventConsumer(
        pool,
        settings,
        name=name,
        handlers={ev.ManualTicketUpdated: handle},
        producer=producer,
        attempts=2,
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:
        async with TopicReader(settings, DEAD_LETTER_TOPIC) as dead:
            await eventually(lambda: _true(seen == [1, 3]), what="the healthy events")
            records = await dead.collect_until(
                lambda rs: any(json.loads(r.value)["consumer"] == name for r in rs)
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
    letter = next(json.loads(r.value) for r in records if json.loads(r.value)["consumer"] == name)
    assert "cannot be handled" in letter["reason"]
    assert letter["event"]["event_id"] == str(appended[1].event_id)
    marked = await pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
        name,
        [e.event_id for e in appended],
    )
    assert marked == 3  # the poison event too: a redelivery will not try it again


async def _true(value: bool) -> bool:
    return value
