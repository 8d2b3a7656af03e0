"""The relay: every stored event reaches Kafka, in stream order, never skipped, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import ConsumerRecord

from conftest import BIN
from pao.contracts.envelope import EventEnvelope, NewEvent
from pao.contracts.topics import topic_for_category
from pao.shared.eventstore import EventStore
from pao.shared.idempotency import handle_once
from pao.shared.kafka import make_producer
from pao.shared.relay import Relay, decode_record_value
from pao.shared.settings import Settings
from support import eventually
from support.kafka import TopicReader

pytestmark = pytest.mark.asyncio(loop_scope="session")

REQUEST_TOPIC = topic_for_category("request")


def event(n: int) -> NewEvent:
    return NewEvent(event_type="StepRecorded", data={"n": n}, correlation_id=f"corr-{n}")


def of_stream(records: list[ConsumerRecord], stream_id: str) -> list[EventEnvelope]:
    return [decode_record_value(r.value) for r in records if r.key == stream_id.encode()]


@pytest_asyncio.fixture(loop_scope="session")
async def relay(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Relay]:
    """An in-process relay with its own checkpoint, running until the test ends."""
    producer = make_producer(settings)
    await producer.start()
    relay = Relay(pool, producer, name=f"test-{uuid.uuid4().hex[:8]}", poll_interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    yield relay
    stop.set()
    await task
    await producer.stop()


async def test_events_reach_their_topic_keyed_by_stream_with_headers(
    store: EventStore, relay: Relay, settings: Settings, stream_id: str
) -> None:
    appended = await store.append(stream_id, [event(1), event(2)], 0)

    async with TopicReader(settings, REQUEST_TOPIC) as reader:
        records = await reader.collect_until(lambda rs: len(of_stream(rs, stream_id)) >= 2)

    mine = [r for r in records if r.key == stream_id.encode()]
    assert [decode_record_value(r.value) for r in mine] == appended
    headers = dict(mine[0].headers)
    assert headers["event_type"] == b"StepRecorded"
    assert headers["correlation_id"] == b"corr-1"
    assert headers["event_id"] == str(appended[0].event_id).encode()
    assert json.loads(mine[0].value)["stream_id"] == stream_id
    assert len({r.partition for r in mine}) == 1  # one stream, one partition, one order


async def test_an_append_committed_late_is_published_in_stream_order_and_not_skipped(
    store: EventStore, pool: asyncpg.Pool, relay: Relay, settings: Settings
) -> None:
    slow, fast = f"request-slow-{uuid.uuid4().hex}", f"request-fast-{uuid.uuid4().hex}"
    await store.append(slow, [event(1)], 0)

    # The slow append takes its global position first, then stays uncommitted ...
    async with pool.acquire() as held:
        tx = held.transaction()
        await tx.start()
        late = await store.append(slow, [event(2)], 1, conn=held)
        # ... while a later append takes a higher position and commits.
        early = await store.append(fast, [event(3)], 0)
        assert early[0].global_position > late[0].global_position
        polls = relay.polls
        await eventually(lambda: _true(relay.polls >= polls + 5), what="relay polls")
        await tx.commit()
    await store.append(slow, [event(4)], 2)

    async with TopicReader(settings, REQUEST_TOPIC) as reader:
        records = await reader.collect_until(
            lambda rs: len(of_stream(rs, slow)) >= 3 and len(of_stream(rs, fast)) >= 1
        )
    assert [e.data["n"] for e in of_stream(records, slow)] == [1, 2, 4]
    assert [e.data["n"] for e in of_stream(records, fast)] == [3]


async def test_a_rolled_back_append_does_not_stall_the_relay(
    store: EventStore, pool: asyncpg.Pool, relay: Relay, settings: Settings, stream_id: str
) -> None:
    async with pool.acquire() as held:
        tx = held.transaction()
        await tx.start()
        await store.append(f"request-abandoned-{uuid.uuid4().hex}", [event(0)], 0, conn=held)
        await store.append(stream_id, [event(1)], 0)
        await tx.rollback()
    await store.append(stream_id, [event(2)], 1)

    async with TopicReader(settings, REQUEST_TOPIC) as reader:
        records = await reader.collect_until(lambda rs: len(of_stream(rs, stream_id)) >= 2)
    assert [e.data["n"] for e in of_stream(records, stream_id)] == [1, 2]


async def _true(value: bool) -> bool:
    return value


async def _relay_sessions_ended(pool: asyncpg.Pool) -> bool:
    remaining = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pao-relay'"
    )
    return remaining == 0


async def _start_relay_process(settings: Settings, name: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PAO_DATABASE_URL": settings.database_url or "",
        "PAO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "PAO_RELAY_NAME": name,
        "PAO_LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        str(BIN / "pao"),
        "serve",
        "relay",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_a_relay_killed_before_its_checkpoint_republishes_and_consumers_apply_once(
    store: EventStore, pool: asyncpg.Pool, settings: Settings, stream_id: str
) -> None:
    name = f"crash-{uuid.uuid4().hex[:8]}"
    await pool.execute(
        "INSERT INTO relay_checkpoints (name, transaction_id, global_position) VALUES ($1, '0', 0)",
        name,
    )
    appended = await store.append(stream_id, [event(n) for n in range(5)], 0)

    reader = TopicReader(settings, REQUEST_TOPIC)
    async with reader, pool.acquire() as blocker:
        # Holding the checkpoint row makes the relay stop after Kafka accepted the batch.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM relay_checkpoints WHERE name = $1 FOR UPDATE", name)
        first = await _start_relay_process(settings, name)
        try:
            await reader.collect_until(lambda rs: len(of_stream(rs, stream_id)) >= 5)
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
            # If the relay had already sent its checkpoint, the statement still waits behind our
            # lock in the server; a crash before sending it would leave nothing, so end its
            # sessions before letting go of the lock.
            await eventually(lambda: _relay_sessions_ended(pool), what="relay sessions to end")
            await tx.rollback()

        second = await _start_relay_process(settings, name)
        try:
            records = await reader.collect_until(lambda rs: len(of_stream(rs, stream_id)) >= 10)
        finally:
            second.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second.wait(), 15)

    delivered = of_stream(records, stream_id)
    assert sorted(e.event_id for e in delivered) == sorted(2 * [e.event_id for e in appended])

    await pool.execute(
        "CREATE TABLE IF NOT EXISTS test_applied (event_id uuid, stream_id text, n int)"
    )

    async def apply(conn: asyncpg.Connection, e: EventEnvelope) -> None:
        await conn.execute(
            "INSERT INTO test_applied VALUES ($1, $2, $3)", e.event_id, e.stream_id, e.data["n"]
        )

    outcomes = [
        await handle_once(pool, consumer="test-consumer", event=e, handler=apply) for e in delivered
    ]
    assert outcomes.count(True) == 5
    applied = await pool.fetch(
        "SELECT n FROM test_applied WHERE stream_id = $1 ORDER BY n", stream_id
    )
    assert [r["n"] for r in applied] == [0, 1, 2, 3, 4]
