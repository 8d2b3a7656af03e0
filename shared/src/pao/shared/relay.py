"""The relay: publishes every stored event to Kafka, in the store's commit-safe order.

Why the order is (transaction_id, global_position) and not global_position alone: positions are
taken at INSERT, so a transaction that inserted position 10 may commit after another one committed
position 11. A reader that followed positions would pass 11, then never see 10. Instead the relay
only reads rows whose transaction id is below the oldest transaction still running
(`pg_snapshot_xmin`): no such transaction can commit anything new, so the set of rows below that
horizon is final, and a checkpoint of (transaction_id, global_position) never skips one. A
rolled-back transaction simply leaves the horizon when it ends, so it never stalls the relay.

A broker can come back without its log (an in-memory broker restarted, a cluster that lost a
partition's tail). The relay notices: Kafka answers each produce with the record's offset, and
the relay remembers the next offset of every partition it published to (saved with its
checkpoint); a lower answer means the log went backwards, and the relay publishes the whole
store again from position 0 (consumers skip what they applied). After any failed batch it also
makes sure PAO's topics exist with their partition counts before producing again, so that a
broker's auto-creation never picks another count (which would move keys).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from pao.contracts.envelope import EventEnvelope
from pao.contracts.topics import topic_for_stream
from pao.shared import metrics
from pao.shared.eventstore import Checkpoint, read_committed
from pao.shared.lifecycle import pause, run_as_leader

log = structlog.get_logger(__name__)

_SAVE_CHECKPOINT_SQL = """
INSERT INTO relay_checkpoints (name, transaction_id, global_position, published, updated_at)
VALUES ($1, $2::text::xid8, $3, $4, now())
ON CONFLICT (name) DO UPDATE
SET transaction_id = EXCLUDED.transaction_id,
    global_position = EXCLUDED.global_position,
    published = EXCLUDED.published,
    updated_at = now()
"""

# How far behind the relay is: the store's head, and the age of the first event after the
# checkpoint in commit-safe order (one index probe each on the relay's order and the primary key).
_LAG_SQL = """
SELECT (SELECT coalesce(max(global_position), 0) FROM events) AS head,
       (SELECT extract(epoch FROM clock_timestamp() - recorded_at) FROM events
        WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
        ORDER BY transaction_id, global_position LIMIT 1) AS oldest
"""

EnsureTopics = Callable[[], Awaitable[None]]

#: How often the relay makes sure PAO's topics exist even when nothing failed (a broker that
#: restarted between two batches may have come back without them).
_TOPIC_CHECK_SECONDS = 5.0


def encode_envelope(event: EventEnvelope) -> bytes:
    """The Kafka record value: the envelope as JSON."""
    return event.model_dump_json().encode()


def record_headers(event: EventEnvelope) -> list[tuple[str, bytes]]:
    """Kafka headers that let consumers route without parsing the value, and continue the
    trace the event was appended in."""
    headers = [
        ("event_type", event.event_type.encode()),
        ("event_id", str(event.event_id).encode()),
        ("schema_version", str(event.schema_version).encode()),
    ]
    if event.correlation_id:
        headers.append(("correlation_id", event.correlation_id.encode()))
    if event.traceparent:
        headers.append(("traceparent", event.traceparent.encode()))  # W3C trace context
    return headers


def decode_record_value(value: bytes) -> EventEnvelope:
    """An envelope back from a Kafka record value."""
    return EventEnvelope.model_validate_json(value)


class Relay:
    """Publishes events from the store to `pao.<category>.events`, key = stream id.

    At-least-once: the checkpoint is saved only after Kafka acknowledged the batch, so a crash in
    between republishes it; consumers drop the duplicates (see `pao.shared.idempotency`). One relay
    per name is active at a time, elected through a PostgreSQL advisory lock.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        name: str = "main",
        batch_size: int = 2_000,
        poll_interval: float = 0.01,
        ensure_topics: EnsureTopics | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self.name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._ensure_topics = ensure_topics
        self._topics_checked = ensure_topics is None
        self._next_topic_check = 0.0
        self.published = 0
        self.polls = 0
        self.republished = 0
        self.checkpoint = Checkpoint(0, 0)
        #: "topic/partition" -> the offset the next record there should get
        self.offsets: dict[str, int] = {}

    async def load_checkpoint(self) -> Checkpoint:
        """Read this relay's checkpoint from PostgreSQL."""
        row = await self._pool.fetchrow(
            "SELECT transaction_id::text AS txid, global_position, published "
            "FROM relay_checkpoints WHERE name = $1",
            self.name,
        )
        self.checkpoint = (
            Checkpoint(int(row["txid"]), row["global_position"]) if row else Checkpoint(0, 0)
        )
        self.offsets = dict(row["published"]) if row else {}
        return self.checkpoint

    async def publish_batch(self) -> int:
        """Publish the next batch, then save the checkpoint; return how many events went out."""
        self.polls += 1
        if self._ensure_topics is not None and (
            not self._topics_checked or time.monotonic() >= self._next_topic_check
        ):
            await self._ensure_topics()
            self._topics_checked = True
            self._next_topic_check = time.monotonic() + _TOPIC_CHECK_SECONDS
        read = await read_committed(self._pool, self.checkpoint, self._batch_size)
        if not read:
            return 0
        events = [event for _, event in read]
        sends = [
            await self._producer.send(
                topic_for_stream(e.stream_id),
                value=encode_envelope(e),
                key=e.stream_id.encode(),
                headers=record_headers(e),
            )
            for e in events
        ]
        offsets = dict(self.offsets)
        went_back = []
        for sent in await asyncio.gather(*sends):
            where = f"{sent.topic}/{sent.partition}"
            if sent.offset < offsets.get(where, 0):
                went_back.append(where)
            offsets[where] = max(offsets.get(where, 0), sent.offset + 1)
        if went_back:
            await self._republish(went_back)
            return len(events)
        checkpoint = read[-1][0]
        await self._pool.execute(
            _SAVE_CHECKPOINT_SQL,
            self.name,
            str(checkpoint.transaction_id),
            checkpoint.global_position,
            offsets,
        )
        self.checkpoint, self.offsets = checkpoint, offsets
        self.published += len(events)
        metrics.RELAY_PUBLISHED.inc(len(events))
        return len(events)

    async def sample_lag(self) -> None:
        """Set the lag gauges: events not yet published, and how old the oldest of them is."""
        row = await self._pool.fetchrow(
            _LAG_SQL, str(self.checkpoint.transaction_id), self.checkpoint.global_position
        )
        metrics.RELAY_LAG_EVENTS.set(max(row["head"] - self.checkpoint.global_position, 0))
        metrics.RELAY_LAG_SECONDS.set(max(float(row["oldest"] or 0.0), 0.0))

    async def _republish(self, partitions: list[str]) -> None:
        """The broker's log went backwards: publish everything again, from position 0."""
        log.warning(
            "the broker's log went backwards; publishing the whole store again",
            relay=self.name,
            partitions=sorted(set(partitions)),
        )
        self.checkpoint, self.offsets = Checkpoint(0, 0), {}
        self.republished += 1
        await self._pool.execute(_SAVE_CHECKPOINT_SQL, self.name, "0", 0, {})

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, while leading; back off on broker and database errors."""
        await run_as_leader(self._pool, f"pao.relay.{self.name}", stop, self._lead)

    async def _lead(self, ended: asyncio.Event) -> None:
        await self.load_checkpoint()
        log.info("relay started", relay=self.name, checkpoint=self.checkpoint)
        await self._loop(ended)

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        next_sample = 0.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                published = await self.publish_batch()
                if started >= next_sample:
                    await self.sample_lag()
                    next_sample = started + metrics.SAMPLE_SECONDS
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - an outage must park the relay, not kill it
                self._topics_checked = self._ensure_topics is None
                log.warning(
                    "relay batch failed; retrying",
                    relay=self.name,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=backoff,
                )
                await pause(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published:
                log.debug(
                    "relay published",
                    relay=self.name,
                    events=published,
                    ms=round((time.monotonic() - started) * 1000, 1),
                )
            if published < self._batch_size:
                await pause(stop, self._poll_interval)
