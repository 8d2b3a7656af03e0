"""The event consumer: in order per stream, once per event, a poison event dead-lettered."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

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


def ticket_comment_record(tp: Any, offset: int, comment: str) -> Any:
    """A record of `ManualTicketUpdated` on `tp` at `offset`, as the relay would publish it."""
    from aiokafka import ConsumerRecord

    from pao.contracts.envelope import EventEnvelope
    from pao.shared.relay import encode_envelope, record_headers

    event = ev.ManualTicketUpdated(request_id="r", action="a", key="K-1", comment=comment)
    envelope = EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=1,
        stream_id="request-r",
        stream_version=1,
        global_position=1,
        occurred_at=datetime.now(UTC),
        data=event.model_dump(mode="json"),
    )
    return ConsumerRecord(
        tp.topic, tp.partition, offset, 0, 0, b"request-r", encode_envelope(envelope), None, 0, 0,
        record_headers(envelope),
    )  # fmt: skip


async def test_an_instance_whose_partition_moved_on_applies_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The instance froze; the group gave its partition to another, which claimed it. When it
    wakes with a record still in hand, the claim check rolls its work back."""
    from aiokafka import TopicPartition

    from pao.shared.consumer import Fenced

    name = f"test-fence-{uuid.uuid4().hex[:8]}"
    applied: list[str] = []

    async def handle(delivery: Delivery[ev.ManualTicketUpdated]) -> None:
        await delivery.conn.execute("SELECT 1")
        applied.append(delivery.event.comment)

    stale = EventConsumer(pool, settings, name=name, handlers={ev.ManualTicketUpdated: handle})
    tp = TopicPartition("pao.request.events", 0)
    stale._claims[tp] = "claim-of-the-frozen-instance"
    await pool.execute(
        "INSERT INTO consumer_partitions (consumer, topic, partition, owner) "
        "VALUES ($1, $2, $3, $4)",
        name,
        tp.topic,
        tp.partition,
        "claim-of-the-new-owner",
    )
    record = ticket_comment_record(tp, 7, "late")
    with pytest.raises(Fenced):
        await stale._handle_record(tp, record, "claim-of-the-frozen-instance")
    assert applied == ["late"]  # the handler ran, but its transaction did not commit
    assert not await pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE consumer = $1", name
    )


async def test_work_fenced_by_a_rebalance_keeps_the_claim_the_new_assignment_made(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A batch applied under claim A while a rebalance gave the same instance the partition again
    under claim B: the batch's work is fenced, and claim B stays (forgetting it would leave the
    partition unclaimed, and its records skipped, for good)."""
    from aiokafka import TopicPartition

    from pao.shared.consumer import Fenced

    name = f"test-refence-{uuid.uuid4().hex[:8]}"

    async def handle(delivery: Delivery[ev.ManualTicketUpdated]) -> None:
        await delivery.conn.execute("SELECT 1")

    consumer = EventConsumer(pool, settings, name=name, handlers={ev.ManualTicketUpdated: handle})
    tp = TopicPartition("pao.request.events", 1)
    consumer._claims[tp] = "claim-b"  # the new assignment, made while the batch ran
    await pool.execute(
        "INSERT INTO consumer_partitions (consumer, topic, partition, owner) "
        "VALUES ($1, $2, $3, $4)",
        name,
        tp.topic,
        tp.partition,
        "claim-b",
    )
    record = ticket_comment_record(tp, 3, "in flight")
    with pytest.raises(Fenced):
        await consumer._handle_record(tp, record, "claim-a")
    consumer._forget({tp}, {tp: "claim-a"})
    assert consumer._claims[tp] == "claim-b"
    consumer._forget({tp}, {tp: "claim-b"})  # fenced under the current claim: it goes
    assert tp not in consumer._claims


async def test_the_stored_offsets_are_committed_to_the_kafka_group_for_lag_tools(
    store: EventStore, pool: asyncpg.Pool, settings: Settings
) -> None:
    """What kafka-consumer-groups and KEDA's kafka scaler read: the group's committed offsets
    reach the offsets PAO stored, once the events are handled."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    stream = f"request-{uuid.uuid4().hex}"
    name = f"test-consumer-{uuid.uuid4().hex[:8]}"
    request_id = stream.removeprefix("request-")
    event = ev.ManualTicketUpdated(request_id=request_id, action="a", key="K-1", comment="c")
    await store.append(stream, [event.new()], 0)
    seen: list[str] = []

    async def handle(delivery: Delivery[ev.ManualTicketUpdated]) -> None:
        if delivery.envelope.stream_id == stream:
            seen.append(delivery.event.comment)

    producer = make_producer(settings)
    await producer.start()
    stop = asyncio.Event()
    relay = Relay(pool, producer, name=f"test-{uuid.uuid4().hex[:8]}")
    consumer = EventConsumer(pool, settings, name=name, handlers={ev.ManualTicketUpdated: handle})
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    # A reader of the group's committed offsets that never joins it (as lag tools read them).
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=name, enable_auto_commit=False
    )
    await reader.start()

    async def committed_as_stored() -> bool:
        stored = {
            TopicPartition(r["topic"], r["partition"]): r["next_offset"]
            for r in await pool.fetch(
                "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = $1",
                name,
            )
        }
        if not seen or not stored:
            return False
        return all([await reader.committed(tp) == n for tp, n in stored.items()])

    try:
        await eventually(committed_as_stored, what="the group's offsets committed to Kafka")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await reader.stop()
        await producer.stop()
