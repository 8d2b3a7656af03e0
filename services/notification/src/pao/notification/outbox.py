"""The notification outbox: notices stored with the event that caused them, then sent once.

A notice is stored in the transaction that handles its event, under a unique (event, recipient,
channel) key, so a redelivered event adds nothing. Sending is at most once: a row is marked
'sending' and committed before the channel is called, so a sender that dies mid-send leaves a
row that is never sent again automatically; the next sender to start marks it 'unknown' and logs
it for a person to check. Transient failures go back to 'pending' with exponential backoff.
Any number of senders run side by side (SKIP LOCKED splits the due rows); each looks for rows
another sender left 'sending' for longer than `stale_after`, at start and then that often.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta

import asyncpg
import structlog

from pao.notification.channels import Channel, DeliveryError
from pao.notification.notices import Notice
from pao.shared import metrics
from pao.shared.lifecycle import pause
from pao.shared.outages import outage

log = structlog.get_logger(__name__)

_ENQUEUE_SQL = """
INSERT INTO notification_outbox (event_id, recipient, channel, address, subject, body, payload)
SELECT n.event_id, n.recipient, n.channel, n.address, n.subject, n.body, n.payload::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS n(event_id, recipient, channel, address, subject, body, payload)
ON CONFLICT (event_id, recipient, channel) DO NOTHING
RETURNING id
"""

# The inner SELECT takes the rows with SKIP LOCKED, so concurrent senders split the due rows
# between them instead of queueing behind each other's locks.
_CLAIM_SQL = """
UPDATE notification_outbox
SET status = 'sending', attempts = attempts + 1, claimed_at = now()
WHERE id IN (
    SELECT id FROM notification_outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, event_id, recipient, channel, address, subject, body, payload::text AS payload,
          attempts
"""

_SENT_SQL = """
UPDATE notification_outbox SET status = 'sent', sent_at = now(), last_error = NULL
WHERE id = $1 AND status = 'sending'
"""

_RETRY_SQL = """
UPDATE notification_outbox
SET status = 'pending', next_attempt_at = now() + $2::interval, last_error = $3
WHERE id = $1 AND status = 'sending'
"""

_FINAL_SQL = """
UPDATE notification_outbox SET status = $2, last_error = $3
WHERE id = $1 AND status = 'sending'
"""

_RECOVER_SQL = """
UPDATE notification_outbox
SET status = 'unknown',
    last_error = 'the sender stopped while sending; not resent, the outcome is unknown'
WHERE status = 'sending' AND claimed_at < now() - $1::interval
RETURNING id, event_id, recipient, channel, claimed_at
"""


async def enqueue(conn: asyncpg.Connection, notices: Sequence[Notice]) -> int:
    """Store `notices` in the caller's transaction; return how many were not stored already."""
    if not notices:
        return 0
    rows = await conn.fetch(
        _ENQUEUE_SQL,
        [n.event_id for n in notices],
        [n.recipient for n in notices],
        [n.channel for n in notices],
        [n.address for n in notices],
        [n.subject for n in notices],
        [n.text for n in notices],
        [json.dumps(n.payload) for n in notices],
    )
    return len(rows)


def _notice(row: asyncpg.Record) -> Notice:
    return Notice(
        event_id=row["event_id"],
        recipient=row["recipient"],
        channel=row["channel"],
        address=row["address"],
        subject=row["subject"],
        text=row["body"],
        payload=json.loads(row["payload"]),
    )


class OutboxSender:
    """Sends due notices through their channels and records what became of each."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Mapping[str, Channel],
        *,
        poll_interval: float = 0.2,
        retry_base: timedelta = timedelta(seconds=10),
        retry_cap: timedelta = timedelta(minutes=10),
        max_attempts: int = 8,
        stale_after: timedelta = timedelta(minutes=1),
        batch_size: int = 50,
    ) -> None:
        self._pool = pool
        self._channels = dict(channels)
        self._poll_interval = poll_interval
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._max_attempts = max_attempts
        self._stale_after = stale_after
        self._batch_size = batch_size

    def retry_delay(self, attempts: int) -> timedelta:
        """How long to wait after the `attempts`-th failed attempt: doubling, capped."""
        return min(self._retry_cap, self._retry_base * 2 ** max(attempts - 1, 0))

    async def recover_interrupted(self) -> int:
        """Mark rows left 'sending' by a stopped sender as 'unknown'; return how many."""
        rows = await self._pool.fetch(_RECOVER_SQL, self._stale_after)
        for row in rows:
            log.warning(
                "notice outcome unknown: its sender stopped while sending, it is not resent",
                notice_id=row["id"],
                event_id=str(row["event_id"]),
                recipient=row["recipient"],
                channel=row["channel"],
                claimed_at=row["claimed_at"].isoformat(),
            )
        return len(rows)

    async def deliver_due(self, limit: int = 50) -> int:
        """Claim up to `limit` due notices, send them, record each outcome; return how many."""
        # Committed as 'sending' before any is sent: that is what makes sending at most once.
        rows = await self._pool.fetch(_CLAIM_SQL, limit)
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due notices until `stop` is set; recover interrupted sends now and then."""
        loop = asyncio.get_running_loop()
        next_recovery = loop.time()
        while not stop.is_set():
            try:
                if loop.time() >= next_recovery:
                    await self.recover_interrupted()
                    next_recovery = loop.time() + self._stale_after.total_seconds()
                claimed = await self.deliver_due(self._batch_size)
            except Exception as exc:  # noqa: BLE001 - the sender waits and goes on
                (log.warning if outage(exc) else log.exception)(
                    "notification outbox unreachable, trying again", error=str(exc)
                )
                claimed = 0
            if claimed >= self._batch_size:
                continue
            await pause(stop, self._poll_interval)

    async def _deliver(self, row: asyncpg.Record) -> None:
        notice = _notice(row)
        fields = {
            "notice_id": row["id"],
            "event_id": str(notice.event_id),
            "recipient": notice.recipient,
            "channel": notice.channel,
            "attempt": row["attempts"],
        }
        channel = self._channels.get(notice.channel)
        try:
            if channel is None:
                raise DeliveryError(
                    f"{notice.channel}: no such channel is configured", transient=False
                )
            await channel.send(notice)
        except DeliveryError as exc:
            metrics.NOTIFICATION_SEND_FAILURES.labels(channel=notice.channel).inc()
            await self._record_failure(row, exc, fields)
            return
        except Exception as exc:
            metrics.NOTIFICATION_SEND_FAILURES.labels(channel=notice.channel).inc()
            # A fault in the channel itself: whether anything went out is not known, and
            # at-most-once means not guessing.
            log.exception("notice outcome unknown: unexpected error while sending", **fields)
            await self._pool.execute(_FINAL_SQL, row["id"], "unknown", f"unexpected error: {exc!r}")
            return
        await self._pool.execute(_SENT_SQL, row["id"])
        log.info("notice sent", **fields)

    async def _record_failure(
        self, row: asyncpg.Record, error: DeliveryError, fields: dict[str, object]
    ) -> None:
        if error.transient and row["attempts"] < self._max_attempts:
            delay = self.retry_delay(row["attempts"])
            await self._pool.execute(_RETRY_SQL, row["id"], delay, error.message)
            log.info(
                "notice not delivered, will retry",
                error=error.message,
                retry_in_seconds=delay.total_seconds(),
                **fields,
            )
            return
        await self._pool.execute(_FINAL_SQL, row["id"], "failed", error.message)
        log.warning("notice failed", error=error.message, transient=error.transient, **fields)


# Both partial indexes (pending, sending) cover this: it reads the backlog, never the history.
_DEPTH_SQL = """
SELECT (SELECT count(*) FROM notification_outbox WHERE status = 'pending')
     + (SELECT count(*) FROM notification_outbox WHERE status = 'sending')
"""


async def sample_depth(pool: asyncpg.Pool) -> None:
    """Set the outbox depth gauge: notices pending or being sent."""
    metrics.NOTIFICATION_OUTBOX_DEPTH.set(await pool.fetchval(_DEPTH_SQL))
