"""Follow PAO requests on Kafka and print every change of a request's status.

    pip install aiokafka
    python consumer.py [BOOTSTRAP]    # default: $PAO_KAFKA_BOOTSTRAP, else 127.0.0.1:9092

Against `pao up`, the broker's address is `kafka` in .pao/stack.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from aiokafka import AIOKafkaConsumer

TOPIC = "pao.request.events"
GROUP_ID = "example-request-status"  # one group per downstream system

# The request status each event moves to; other events leave it as it is.
STATUS_AFTER = {
    "RequestSubmitted": "submitted",
    "ActionStarted": "in_progress",
    "ActionAwaitingManual": "awaiting_manual",
    "ActionSucceeded": "in_progress",
    "RequestRetried": "in_progress",
    "RequestCompleted": "completed",
    "RequestFailed": "failed",
    "RequestAborted": "aborted",
}
ENDED = {"completed", "failed", "aborted"}


def next_status(current: str | None, event_type: str) -> str | None:
    """An ended request stays ended, except that a retry reopens a failed one."""
    target = STATUS_AFTER.get(event_type)
    if target is None:
        return current
    if current in ENDED and (current, event_type) != ("failed", "RequestRetried"):
        return current
    return target


def report(envelope: dict, status: dict[str, str | None]) -> None:
    """Print the request's new status if this event changed it."""
    request_id = envelope["data"]["request_id"]
    before = status.get(request_id)
    after = next_status(before, envelope["event_type"])
    if after != before:
        status[request_id] = after
        line = f"{envelope['occurred_at']} {request_id}: {before or '-'} -> {after}"
        print(line, flush=True)  # noqa: T201


async def main(bootstrap: str) -> None:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=GROUP_ID,
        auto_offset_reset="earliest",  # a new group reads the topic from its first event
        enable_auto_commit=False,  # commit an offset only once its event is handled
    )
    seen: set[str] = set()  # handled event ids; a real consumer keeps them in its database
    status: dict[str, str | None] = {}  # request id -> status
    await consumer.start()
    try:
        async for record in consumer:
            headers = {name: value.decode() for name, value in record.headers}
            if headers["event_id"] not in seen:  # delivery is at-least-once
                report(json.loads(record.value), status)
                seen.add(headers["event_id"])
            await consumer.commit()
    finally:
        await consumer.stop()


if __name__ == "__main__":
    default = os.environ.get("PAO_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else default))
