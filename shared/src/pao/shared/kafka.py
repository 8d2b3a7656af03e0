"""Kafka clients with the settings PAO needs on Apache Kafka and on tansu alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pao.shared.settings import Settings

log = structlog.get_logger(__name__)


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
        max_poll_records=1_000,
    )


async def ensure_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
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
