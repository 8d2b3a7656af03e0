"""The event store on a real PostgreSQL: streams, optimistic concurrency, append-only."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pao.contracts.envelope import NewEvent
from pao.shared.eventstore import ANY_VERSION, ConcurrencyConflict, EventStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


def event(kind: str = "RequestSubmitted", **data: object) -> NewEvent:
    return NewEvent(event_type=kind, data=dict(data), correlation_id="corr-1", actor="dana")


async def test_appended_events_read_back_in_order_with_their_envelope(
    store: EventStore, stream_id: str
) -> None:
    first = await store.append(stream_id, [event(n=1), event("ActionStarted", n=2)], 0)
    second = await store.append(stream_id, [event("ActionSucceeded", n=3)], 2)

    assert [e.stream_version for e in first + second] == [1, 2, 3]
    assert first[0].global_position < first[1].global_position < second[0].global_position
    read = await store.read_stream(stream_id)
    assert read == first + second
    assert read[0].data == {"n": 1}
    assert read[0].correlation_id == "corr-1"
    assert read[0].actor == "dana"
    assert read[0].category == "request"
    assert await store.stream_version(stream_id) == 3


async def test_appending_at_a_stale_version_is_a_conflict(
    store: EventStore, stream_id: str
) -> None:
    await store.append(stream_id, [event()], 0)
    with pytest.raises(ConcurrencyConflict):
        await store.append(stream_id, [event()], 0)


async def test_appending_beyond_the_stream_is_a_conflict_not_a_hole(
    store: EventStore, stream_id: str
) -> None:
    await store.append(stream_id, [event()], 0)
    with pytest.raises(ConcurrencyConflict):
        await store.append(stream_id, [event()], 5)
    assert await store.stream_version(stream_id) == 1


async def test_any_version_appends_at_the_end(store: EventStore, stream_id: str) -> None:
    await store.append(stream_id, [event()], 0)
    appended = await store.append(stream_id, [event()], ANY_VERSION)
    assert appended[0].stream_version == 2


async def test_sixteen_concurrent_appends_at_one_version_let_exactly_one_win(
    store: EventStore, stream_id: str
) -> None:
    await store.append(stream_id, [event()], 0)

    async def attempt(i: int) -> str:
        try:
            await store.append(stream_id, [event("Attempted", writer=i)], 1)
        except ConcurrencyConflict:
            return "conflict"
        return "appended"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(16)))

    assert outcomes.count("appended") == 1
    assert outcomes.count("conflict") == 15
    versions = [e.stream_version for e in await store.read_stream(stream_id)]
    assert versions == [1, 2]


async def test_an_event_id_is_stored_once(store: EventStore, stream_id: str) -> None:
    e = event()
    await store.append(stream_id, [e], 0)
    with pytest.raises(asyncpg.UniqueViolationError):
        await store.append(f"{stream_id}-other", [e], 0)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE stream_id = $1",
        "DELETE FROM events WHERE stream_id = $1",
    ],
)
async def test_events_can_never_be_updated_or_deleted(
    store: EventStore, pool: asyncpg.Pool, stream_id: str, statement: str
) -> None:
    await store.append(stream_id, [event(n=1)], 0)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute(statement, stream_id)
    assert (await store.read_stream(stream_id))[0].data == {"n": 1}


async def test_events_cannot_be_truncated(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("TRUNCATE events")


async def test_read_all_returns_committed_events_after_a_position(
    store: EventStore, stream_id: str
) -> None:
    before = await store.last_position()
    appended = await store.append(stream_id, [event(n=i) for i in range(3)], 0)
    after = await store.read_all(after_position=before, limit=10_000)
    mine = [e for e in after if e.stream_id == stream_id]
    assert mine == appended


async def test_an_append_in_a_rolled_back_transaction_leaves_nothing(
    store: EventStore, pool: asyncpg.Pool, stream_id: str
) -> None:
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await store.append(stream_id, [event()], 0, conn=conn)
            raise RuntimeError("handler failed after appending")
    assert await store.read_stream(stream_id) == []
