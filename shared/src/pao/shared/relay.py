"""The relay: publishes every stored event to Kafka, in the store's commit-safe order.

Why the order is (transaction_id, global_position) and not global_position alone: positions are
taken at INSERT, so a transaction that inserted position 10 may commit after another one committed
position 11. A reader that followed positions would pass 11, then never see 10. Instead the relay
only reads rows whose transaction id is below the oldest transaction still running
(`pg_snapshot_xmin`): no such transaction can commit anything new, so the set of rows below that
horizon is final, and a checkpoint of (transaction_id, global_position) never skips one. A
rolled-back transaction simply leaves the horizon when it ends, so it never stalls the relay.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from pao.contracts.envelope import EventEnvelope
from pao.contracts.topics import topic_for_stream
from pao.shared.eventstore import Checkpoint, read_committed
from pao.shared.lifecycle import leadership, pause

log = structlog.get_logger(__name__)

_SAVE_CHECKPOINT_SQL = """
INSERT INTO relay_checkpoints (name, transaction_id, global_position, updated_at)
VALUES ($1, $2::text::xid8, $3, now())
ON CONFLICT (name) DO UPDATE
SET transaction_id = EXCLUDED.transaction_id,
    global_position = EXCLUDED.global_position,
    updated_at = now()
"""


def encode_envelope(event: EventEnvelope) -> bytes:
    """The Kafka record value: the envelope as JSON."""
    return event.model_dump_json().encode()


def record_headers(event: EventEnvelope) -> list[tuple[str, bytes]]:
    """Kafka headers that let consumers route without parsing the value."""
    headers = [
        ("event_type", event.event_type.encode()),
        ("event_id", str(event.event_id).encode()),
        ("schema_version", str(event.schema_version).encode()),
    ]
    if event.correlation_id:
        headers.append(("correlation_id", event.correlation_id.encode()))
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
    ) -> None:
        self._pool = pool
        self._producer = producer
        self.name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self.published = 0
        self.polls = 0
        self.checkpoint = Checkpoint(0, 0)

    async def load_checkpoint(self) -> Checkpoint:
        """Read this relay's checkpoint from PostgreSQL."""
        row = await self._pool.fetchrow(
            "SELECT transaction_id::text AS txid, global_position FROM relay_checkpoints "
            "WHERE name = $1",
            self.name,
        )
        self.checkpoint = (
            Checkpoint(int(row["txid"]), row["global_position"]) if row else Checkpoint(0, 0)
        )
        return self.checkpoint

    async def publish_batch(self) -> int:
        """Publish the next batch, then save the checkpoint; return how many events went out."""
        self.polls += 1
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
        await asyncio.gather(*sends)
        checkpoint = read[-1][0]
        await self._pool.execute(
            _SAVE_CHECKPOINT_SQL,
            self.name,
            str(checkpoint.transaction_id),
            checkpoint.global_position,
        )
        self.checkpoint = checkpoint
        self.published += len(events)
        return len(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; wait for leadership first, back off on broker errors."""
        async with leadership(self._pool, f"pao.relay.{self.name}", stop) as leading:
            if not leading:
                return
            await self.load_checkpoint()
            log.info("relay started", relay=self.name, checkpoint=self.checkpoint)
            await self._loop(stop)

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            started = time.monotonic()
            try:
                published = await self.publish_batch()
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - an outage must park the relay, not kill it
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
