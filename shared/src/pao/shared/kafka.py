"""Kafka clients with the settings PAO needs on Apache Kafka and on tansu alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from pao.shared.settings import Settings

log = structlog.get_logger(__name__)


def _never_create_topics_by_asking() -> None:
    """PAO's clients ask for metadata without letting the broker create a missing topic.

    A broker that auto-creates topics (tansu always does, with 4 partitions) would otherwise
    recreate one the moment a producer or consumer asks about it after the broker lost its
    topics, with a partition count PAO did not choose, so keys would land elsewhere. The flag
    is part of the Kafka protocol (Metadata v4+); aiokafka sets it to true and offers no option,
    so PAO sets its default here, once, for the clients of its own processes. Topics are made by
    `ensure_topics` alone.
    """
    original = MetadataRequest.__init__
    if getattr(original, "pao_never_creates", False):
        return

    def init(
        self: MetadataRequest,
        topics: list[str] | None = None,
        allow_auto_topic_creation: bool | None = None,
    ) -> None:
        original(
            self, topics, False if allow_auto_topic_creation is None else allow_auto_topic_creation
        )

    init.pao_never_creates = True  # type: ignore[attr-defined]
    MetadataRequest.__init__ = init  # type: ignore[method-assign]


_never_create_topics_by_asking()


def _bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise RuntimeError("PAO_KAFKA_BOOTSTRAP is not set")
    return settings.kafka_bootstrap


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica; idempotent where the broker allows it."""
    return AIOKafkaProducer(
        bootstrap_servers=_bootstrap(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=2,
        max_batch_size=1_048_576,
        request_timeout_ms=30_000,
    )


def make_consumer(settings: Settings, *topics: str, group_id: str | None) -> AIOKafkaConsumer:
    """A consumer committing offsets itself, after its effects are stored."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=_bootstrap(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # tansu does not wake long polls early: short waits keep latency low.
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_records=1_000,
    )


async def ensure_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Create the topics that do not exist yet, and give those with too few partitions the
    rest (keys move when the count changes, so the count PAO asks for is the one it keeps)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(settings))
    await admin.start()
    try:
        wanted = list(topics)
        existing = set(await admin.list_topics())
        await _grow(admin, settings, [t for t in wanted if t in existing])
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=settings.kafka_partitions,
                        replication_factor=settings.kafka_replication_factor,
                    )
                    for t in missing
                ]
            )
        except TopicAlreadyExistsError:
            pass  # another process created them between our list and create
        log.info("topics created", topics=missing)
    finally:
        await admin.close()


async def _grow(admin: AIOKafkaAdminClient, settings: Settings, topics: list[str]) -> None:
    if not topics:
        return
    counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    short = {t: n for t, n in counts.items() if 0 < n < settings.kafka_partitions}
    if short:
        await admin.create_partitions({t: NewPartitions(settings.kafka_partitions) for t in short})
        log.warning("topics had too few partitions; added the rest", topics=short)
    for topic, count in counts.items():
        if count > settings.kafka_partitions:
            log.error(
                "topic has more partitions than configured; keys may have moved",
                topic=topic,
                partitions=count,
                configured=settings.kafka_partitions,
            )


async def missing_topics(settings: Settings, topics: Iterable[str]) -> list[str]:
    """The topics of `topics` the broker does not have."""
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        return [t for t in topics if t not in existing]
    finally:
        await admin.close()


async def broker_reachable(settings: Settings, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether the broker answers a metadata request within `timeout` seconds."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=_bootstrap(settings), request_timeout_ms=int(timeout * 1000)
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            topics = await admin.list_topics()
        return True, f"{len(topics)} topics"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as "down"
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        await admin.close()
