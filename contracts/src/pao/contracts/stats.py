"""`GET /api/v1/stats`: the platform's figures, computed from the database when asked, so every
gateway instance answers the same."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Throughput(_Frozen):
    """Requests submitted and finished in the last `seconds`."""

    window: str
    seconds: int
    submitted: int
    completed: int
    failed: int
    aborted: int
    submitted_per_minute: float
    finished_per_minute: float


class Latency(_Frozen):
    """Submit-to-terminal time, in seconds, of the requests that finished in the window."""

    #: the item and mode of these requests; both None for every request together
    item_id: str | None = None
    mode: str | None = None
    count: int
    p50: float | None
    p95: float | None
    p99: float | None


class Latencies(_Frozen):
    """Submit-to-terminal percentiles over the last `seconds`: overall, then per item and mode
    (mode None: the item's default, for requests submitted before modes were recorded)."""

    window: str
    seconds: int
    overall: Latency
    by_item: list[Latency]


class Queue(_Frozen):
    """The fulfilment job queue now."""

    #: pending jobs whose time has come
    due: int
    #: how long the oldest of them has waited past its due time
    oldest_due_age_seconds: float | None
    #: pending jobs due later (retries, polls, parked work)
    scheduled: int
    #: jobs a worker holds under a live lease
    running: int
    #: running jobs whose lease ran out: their worker died or froze; another will claim them
    expired_leases: int


class ParkedSystem(_Frozen):
    """An external system a worker found out (its breaker open), with the work waiting on it."""

    system: str
    parked_jobs: int
    last_parked_at: datetime


class Breakers(_Frozen):
    """Breaker state lives in each worker's memory; what the database shows is the work parked
    behind an open breaker, per system."""

    note: str
    parked: list[ParkedSystem]


class RelayLag(_Frozen):
    """How far a relay's checkpoint is behind the head of the event store."""

    name: str
    checkpoint_position: int
    behind: int
    #: the age of the first event the relay has not published yet (None: it is caught up)
    oldest_unpublished_age_seconds: float | None
    updated_at: datetime


class ProjectorLag(_Frozen):
    """How far a projector's checkpoint is behind the head of the event store."""

    name: str
    checkpoint_position: int
    behind: int
    updated_at: datetime


class ConsumerLag(_Frozen):
    """A consumer group on one topic: its committed offsets (kept in PostgreSQL) against the
    offsets the relay has published to, partition by partition."""

    consumer: str
    topic: str
    partitions: int
    committed: int
    published: int
    behind: int
    last_commit_at: datetime
    last_commit_age_seconds: float


class Lags(_Frozen):
    """Where the relay, the projectors and the consumer groups are against the store's head."""

    head_position: int
    relays: list[RelayLag]
    projectors: list[ProjectorLag]
    consumers: list[ConsumerLag]


class PlatformStats(_Frozen):
    """The platform's figures at `generated_at` (the database's clock)."""

    generated_at: datetime
    throughput: list[Throughput]
    latencies: Latencies
    queue: Queue
    breakers: Breakers
    lags: Lags
