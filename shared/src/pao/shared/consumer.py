"""Consuming PAO's topics in Kafka consumer groups: in order per stream, each event applied once,
failures dead-lettered, outages waited out.

One group per consumer name: the partitions of its topics spread over the running instances and
move when one stops, dies or freezes. Offsets are PAO's, kept in PostgreSQL beside the effects
(Kafka's committed offsets are never used): when the group assigns a partition, the instance
claims it (`consumer_partitions`), reads the stored offset and seeks there. Every transaction
that applies an event checks that claim under a share lock, after the handler and before the
processed mark, so an instance whose partitions moved on while it was frozen rolls back instead
of applying a stale event, and the new owner's claim waits for any such transaction to end.

The stored offset comes with the id of the event just before it. On assignment the instance
reads that event again: if the broker's log no longer holds it there (the broker lost its log,
or the topic was recreated), the partition is read again from its start; idempotency makes the
replay safe.

After the stored offsets move on, the consumer also commits them to the group in Kafka, for
what reads lag there (`kafka-consumer-groups`, KEDA's kafka scaler). That copy is best effort,
one commit in flight at a time, and never read back: an instance always starts from the stored
offset, so a commit lost or late changes nothing but the lag those tools report.

Handlers are registered per event class; the consumer reads the topics of those classes'
categories, decodes each record once (through the upcasters) and hands the typed event to its
handler, with the envelope's metadata and the transaction's connection. Events of other types
pass by untouched. Events of one stream (one Kafka key) are handled in order; different streams
run concurrently. An event whose handler keeps failing is sent to the dead-letter topic with the
reason, marked processed, and the stream goes on; an outage (the database or the broker away) is
never a reason to dead-letter: the event waits until they are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import pydantic
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from opentelemetry.trace import SpanKind

from pao.contracts.envelope import EventEnvelope, NewEvent
from pao.contracts.events import REGISTRY, Event
from pao.contracts.topics import DEAD_LETTER_TOPIC, topic_for_category
from pao.shared import metrics, tracing
from pao.shared.eventstore import ConcurrencyConflict
from pao.shared.idempotency import handle_once
from pao.shared.kafka import ensure_topics, make_consumer
from pao.shared.lifecycle import pause
from pao.shared.outages import Backoff, outage
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

_CLAIM = """
INSERT INTO consumer_partitions (consumer, topic, partition, owner, claimed_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (consumer, topic, partition) DO UPDATE SET owner = EXCLUDED.owner, claimed_at = now()
"""

_SAVE_OFFSET = """
INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, last_event_id, updated_at)
SELECT $1, $2, $3, $4, $5, now()
WHERE EXISTS (SELECT 1 FROM consumer_partitions
              WHERE consumer = $1 AND topic = $2 AND partition = $3 AND owner = $6)
ON CONFLICT (consumer, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, last_event_id = EXCLUDED.last_event_id, updated_at = now()
"""

_OWNER = """
SELECT owner FROM consumer_partitions WHERE consumer = $1 AND topic = $2 AND partition = $3
FOR SHARE
"""


#: How long a partition may wait for its last applied event to come back before the consumer
#: checks whether the log still reaches it.
_VERIFY_PATIENCE = 3.0


class Fenced(Exception):
    """This instance no longer owns the partition: what it was applying is rolled back."""


class _Rebalance(ConsumerRebalanceListener):
    """Claims partitions as the group assigns them and seeks to PAO's stored offsets."""

    def __init__(self, owner: EventConsumer, consumer: AIOKafkaConsumer) -> None:
        self._owner = owner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._owner._claims.pop(tp, None)
            self._owner._verify.pop(tp, None)
            self._owner._forget_lag(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing is handed out for these partitions until they are claimed and positioned.
        self._consumer.pause(*assigned)
        try:
            await self._owner._claim(self._consumer, assigned)
            self._consumer.resume(*assigned)
        except Exception as exc:  # noqa: BLE001 - the consumer restarts and joins again
            log.warning(
                "partitions could not be claimed", consumer=self._owner.name, error=str(exc)
            )
            self._owner._broken = exc


class EventConsumer:
    """Runs each event's handler once per event, in stream order, as one member of its group."""

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
        instance: str | None = None,
    ) -> None:
        self._pool = pool
        self.instance = instance
        self._settings = settings
        self.name = name
        self._handlers = {cls.event_type: handler for cls, handler in handlers.items()}
        self._topics = sorted({topic_for_category(cls.category) for cls in handlers})
        self._producer = producer
        self._slots = asyncio.Semaphore(concurrency)
        self._attempts = attempts
        #: partition -> the claim this instance holds on it (one per assignment)
        self._claims: dict[TopicPartition, str] = {}
        #: partition -> (offset, event id, when to suspect the log) to find again before reading on
        self._verify: dict[TopicPartition, tuple[int, str, float]] = {}
        #: partition -> the offset this group handled up to (the lag is measured from it)
        self._handled_to: dict[TopicPartition, int] = {}
        self._broken: Exception | None = None
        #: the commit of stored offsets to Kafka in flight, if any, and the offsets it has yet
        #: to commit (a copy for lag tools only)
        self._mirroring: asyncio.Task[None] | None = None
        self._unmirrored: dict[TopicPartition, int] = {}
        self._stop = asyncio.Event()
        self.handled = 0
        self.dead_lettered = 0
        self.resynchronised = 0

    @property
    def partitions(self) -> set[TopicPartition]:
        """The partitions this instance owns now."""
        return set(self._claims)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; an outage ends the session, and a new one starts (and
        joins the group again) once the broker and the database answer."""
        self._stop = stop
        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            try:
                await self._consume(stop)
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - the session ends; a new one joins again
                wait = backoff()
                expected = outage(exc) or isinstance(exc, _Rejoin)
                (log.warning if expected else log.exception)(
                    "consumer interrupted; joining again",
                    consumer=self.name,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=wait,
                )
                await pause(stop, wait)

    async def _consume(self, stop: asyncio.Event) -> None:
        await ensure_topics(self._settings, self._topics)  # never let a broker invent them
        consumer = make_consumer(self._settings, group_id=self.name)
        consumer.subscribe(self._topics, listener=_Rebalance(self, consumer))
        self._claims.clear()
        self._verify.clear()
        self._broken = None
        try:
            await consumer.start()
            log.info("consumer started", consumer=self.name, topics=self._topics)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if self._broken is not None:
                    raise _Rejoin(str(self._broken))
                if batch:
                    await self._handle_batch(consumer, batch)
                if self._verify:
                    await self._beyond_the_log(consumer)
                self._sample_lag(consumer)
        finally:
            for tp in list(self._handled_to):
                self._forget_lag(tp)
            self._claims.clear()
            if self._mirroring is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._mirroring, timeout=2)
                self._mirroring = None
            self._unmirrored = {}
            try:
                await consumer.stop()  # leaves the group: its partitions move at once
            except Exception as exc:  # noqa: BLE001 - a broker that is gone cannot be left
                log.warning("consumer did not stop cleanly", consumer=self.name, error=str(exc))

    async def _claim(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Own the assigned partitions and seek each to where this consumer got to."""
        claims = {tp: uuid.uuid4().hex for tp in assigned}
        async with self._pool.acquire() as conn, conn.transaction():
            # Waits for a transaction of the previous owner still applying an event.
            await conn.execute("SET LOCAL lock_timeout = '15s'")
            for tp, claim in claims.items():
                await conn.execute(_CLAIM, self.name, tp.topic, tp.partition, claim)
            stored = {
                (r["topic"], r["partition"]): (r["next_offset"], r["last_event_id"])
                for r in await conn.fetch(
                    "SELECT topic, partition, next_offset, last_event_id FROM consumer_offsets "
                    "WHERE consumer = $1",
                    self.name,
                )
            }
        now = asyncio.get_running_loop().time()
        for tp in assigned:
            next_offset, last_event = stored.get((tp.topic, tp.partition), (0, None))
            if next_offset and last_event is not None:
                consumer.seek(tp, next_offset - 1)  # read the last applied event again
                self._verify[tp] = (next_offset - 1, str(last_event), now + _VERIFY_PATIENCE)
            else:
                await consumer.seek_to_beginning(tp)
            self._handled_to[tp] = next_offset
        self._claims.update(claims)
        # An idle partition's group offset in Kafka is brought to the stored one too.
        self._mirror_offsets(consumer, {tp: n for tp in assigned if (n := self._handled_to[tp])})
        log.info(
            "partitions assigned",
            consumer=self.name,
            partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned),
        )

    async def _beyond_the_log(self, consumer: AIOKafkaConsumer) -> None:
        """Partitions whose last applied event has not come back after a while: if the log now
        ends before it (the broker lost its log and some brokers just wait at a position past
        the end), read the partition again from its start. High watermarks can be reported short
        for a moment, so only one that stays short is believed."""
        now = asyncio.get_running_loop().time()
        waiting = [tp for tp, (_, _, due) in self._verify.items() if due <= now]
        if not waiting:
            return
        ends = await consumer.end_offsets(waiting)
        for tp in waiting:
            offset, event_id, _ = self._verify[tp]
            if ends.get(tp, 0) > offset:
                self._verify[tp] = (offset, event_id, now + _VERIFY_PATIENCE)
                continue
            log.warning(
                "stored offset beyond the log; reading the partition again",
                consumer=self.name,
                partition=f"{tp.topic}/{tp.partition}",
                stored=offset + 1,
                end=ends.get(tp),
            )
            del self._verify[tp]
            self.resynchronised += 1
            consumer.seek(tp, 0)

    def _verified(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list) -> list:
        """The records after the one this partition was verified with; none (and the partition
        read again from its start) when the log does not hold that event there."""
        expected = self._verify.pop(tp, None)
        if expected is None:
            return records
        offset, event_id, _ = expected
        first = records[0]
        if first.offset == offset and _header(first, "event_id") == event_id:
            return records[1:]
        log.warning(
            "the broker's log changed under this consumer; reading the partition again",
            consumer=self.name,
            partition=f"{tp.topic}/{tp.partition}",
            expected_offset=offset,
            found_offset=first.offset,
        )
        self.resynchronised += 1
        consumer.seek(tp, 0)
        return []

    async def _handle_batch(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        for tp, records in batch.items():
            if tp not in self._claims and records and tp in consumer.assignment():
                consumer.seek(tp, records[0].offset)  # not claimed yet: read these again later
        owned = {
            tp: self._verified(consumer, tp, records)
            for tp, records in batch.items()
            if tp in self._claims and records
        }
        by_stream: dict[tuple[TopicPartition, bytes], list[ConsumerRecord]] = defaultdict(list)
        for tp, records in owned.items():
            for record in records:
                by_stream[(tp, record.key or b"")].append(record)
        # Partitions this instance lost, and partitions left half done (stopping); their
        # offsets stay where they were.
        fenced: set[TopicPartition] = set()
        unfinished: set[TopicPartition] = set()
        # The claim each partition's records are applied under: work started under a claim that a
        # rebalance has since replaced is fenced, and only that claim is forgotten (the new one,
        # from the new assignment, stays and reads the partition from the stored offset).
        claims = {tp: self._claims[tp] for tp in owned}
        await asyncio.gather(
            *(
                self._handle_stream(tp, records, claims[tp], fenced, unfinished)
                for (tp, _), records in by_stream.items()
            )
        )
        self._forget(fenced, claims)
        done = {
            tp: records[-1]
            for tp, records in owned.items()
            if records and tp not in fenced | unfinished and self._claims.get(tp) == claims[tp]
        }
        if done:
            async with self._pool.acquire() as conn:
                for tp, last in done.items():
                    claim = self._claims.get(tp)  # a rebalance may have taken it meanwhile
                    if claim is None:
                        continue
                    event_id = _header(last, "event_id")
                    await conn.execute(
                        _SAVE_OFFSET,
                        self.name,
                        tp.topic,
                        tp.partition,
                        last.offset + 1,
                        uuid.UUID(event_id) if event_id else None,
                        claim,
                    )
                    self._handled_to[tp] = last.offset + 1
            saved = {tp: last.offset + 1 for tp, last in done.items() if tp in self._claims}
            self._mirror_offsets(consumer, saved)

    def _mirror_offsets(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
    ) -> None:
        """Commit the stored offsets to the group in Kafka too, in the background, one commit
        at a time: offsets that arrive meanwhile go with the next one."""
        if not self._settings.kafka_commit_offsets or not offsets:
            return
        self._unmirrored.update(offsets)
        if self._mirroring is None or self._mirroring.done():
            self._mirroring = asyncio.create_task(self._commit_mirrored(consumer))

    async def _commit_mirrored(self, consumer: AIOKafkaConsumer) -> None:
        while self._unmirrored:
            owned = consumer.assignment()
            offsets = {tp: n for tp, n in self._unmirrored.items() if tp in owned}
            self._unmirrored = {}
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - a copy for lag tools; PAO never reads it
                # Kept for the next batch's commit, unless newer offsets come first.
                self._unmirrored = {**offsets, **self._unmirrored}
                log.debug("offsets not committed to kafka", consumer=self.name, error=str(exc))
                return

    def _sample_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Records past the handled offset on each owned partition, from the high watermark the
        last fetch reported (it may run short on some brokers: a gauge, never a decision)."""
        for tp in self._claims.keys() & consumer.assignment():
            try:
                highwater = consumer.highwater(tp)
            except (AssertionError, AttributeError):  # a rebalance took it meanwhile
                continue
            if highwater is not None:
                lag = max(highwater - self._handled_to.get(tp, 0), 0)
                metrics.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(lag)

    def _forget_lag(self, tp: TopicPartition) -> None:
        """A partition no longer owned here: its lag is another instance's to report."""
        self._handled_to.pop(tp, None)
        with contextlib.suppress(KeyError):
            metrics.CONSUMER_LAG.remove(self.name, tp.topic, str(tp.partition))

    def _forget(self, fenced: set[TopicPartition], claims: dict[TopicPartition, str]) -> None:
        """Drop the claims the fenced work ran under, unless a new assignment replaced them."""
        for tp in fenced:
            if self._claims.get(tp) == claims[tp]:
                self._claims.pop(tp, None)

    async def _handle_stream(
        self,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        claim: str,
        fenced: set[TopicPartition],
        unfinished: set[TopicPartition],
    ) -> None:
        async with self._slots:
            for record in records:
                if tp in fenced:
                    return
                try:
                    if not await self._handle_record(tp, record, claim):
                        unfinished.add(tp)
                        return
                except Fenced:
                    log.warning(
                        "partition moved to another instance; stopping its work here",
                        consumer=self.name,
                        partition=f"{tp.topic}/{tp.partition}",
                    )
                    fenced.add(tp)
                    return

    async def _fence(self, conn: asyncpg.Connection, tp: TopicPartition, claim: str) -> None:
        owner = await conn.fetchval(_OWNER, self.name, tp.topic, tp.partition)
        if owner is None or owner != claim or self._claims.get(tp) != claim:
            raise Fenced(f"{tp.topic}/{tp.partition}")

    async def _handle_record(self, tp: TopicPartition, record: ConsumerRecord, claim: str) -> bool:
        """Apply one record (or dead-letter it); False when stopping interrupted it."""
        try:
            envelope = decode_record_value(record.value)
        except (ValueError, TypeError) as exc:
            await self._dead_letter(record, None, f"undecodable record: {exc}")
            return True
        handler = self._handlers.get(envelope.event_type)
        if handler is None:
            return True
        try:
            event = REGISTRY.decode(envelope)
        except (KeyError, pydantic.ValidationError) as exc:
            await self._dead_letter(record, envelope, f"undecodable {envelope.event_type}: {exc}")
            return True
        if not tracing.enabled():
            return await self._apply(tp, record, claim, envelope, event, handler)
        parent = tracing.context_of(_header(record, "traceparent") or envelope.traceparent)
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.kafka.consumer.group": self.name,
            "messaging.message.id": str(envelope.event_id),
            "pao.event_type": envelope.event_type,
        }
        with tracing.span(
            f"{record.topic} process",
            kind=SpanKind.CONSUMER,
            parent=parent,
            attributes=attributes,
            correlation_id=envelope.correlation_id,
        ):
            return await self._apply(tp, record, claim, envelope, event, handler)

    async def _apply(
        self,
        tp: TopicPartition,
        record: ConsumerRecord,
        claim: str,
        envelope: EventEnvelope,
        event: Event,
        handler: Handler,
    ) -> bool:
        """Run the handler once for the event, through failures and outages."""

        async def handle(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
            await handler(Delivery(event, envelope, conn))

        async def fence(conn: asyncpg.Connection) -> None:
            await self._fence(conn, tp, claim)

        attempt, away = 0, Backoff(0.2, 5.0)
        while not self._stop.is_set():
            try:
                if await handle_once(
                    self._pool,
                    consumer=self.name,
                    event=envelope,
                    handler=handle,
                    fence=fence,
                    instance=self.instance,
                ):
                    self.handled += 1
                    metrics.CONSUMER_HANDLED.labels(self.name, record.topic).inc()
                return True
            except Fenced:
                raise
            except ConcurrencyConflict:
                continue  # another writer got to the stream first: decide again
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if outage(exc):  # never the event's fault: wait for the database, then again
                    wait = away()
                    log.warning(
                        "database away; the event waits",
                        consumer=self.name,
                        event_type=envelope.event_type,
                        error=reason,
                        retry_in=wait,
                    )
                    await pause(self._stop, wait)
                    continue
                attempt += 1
                if attempt >= self._attempts:
                    log.exception(
                        "event dead-lettered",
                        consumer=self.name,
                        event_type=envelope.event_type,
                        event_id=str(envelope.event_id),
                    )
                    await self._dead_letter(record, envelope, reason)
                    return True
                log.warning(
                    "event handler failed; trying again",
                    consumer=self.name,
                    event_type=envelope.event_type,
                    attempt=attempt,
                    error=reason,
                )
                await pause(self._stop, 0.2 * 2**attempt)
        return False

    async def _dead_letter(
        self, record: ConsumerRecord, event: EventEnvelope | None, reason: str
    ) -> None:
        self.dead_lettered += 1
        metrics.CONSUMER_DEAD_LETTERED.labels(self.name, record.topic).inc()
        log.warning(
            "event sent to the dead-letter topic",
            consumer=self.name,
            reason=reason[:500],
            partition=f"{record.topic}/{record.partition}",
            offset=record.offset,
        )
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


class _Rejoin(Exception):
    """The session must end and join the group again (a claim could not be made)."""


def _header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None
