"""Append throughput, 1 and 16 writers, beside a raw durable single-row INSERT in the same run.

uv run python bench/append.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from infra import fresh_database
from pao.contracts.envelope import NewEvent
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore

PAYLOAD = {"item_id": "postgresql-rds", "inputs": {"name": "orders", "size": "m"}}


async def run_writers(writers: int, seconds: float, write) -> float:
    """Run `writers` loops calling `write(writer, n)` for `seconds`; return writes per second."""
    counts = [0] * writers
    deadline = time.perf_counter() + seconds

    async def loop(w: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            await write(w, n)
            n += 1
        counts[w] = n

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(writers)))
    return sum(counts) / (time.perf_counter() - started)


async def main(seconds: float) -> None:
    async with fresh_database() as dsn:
        pool = await create_pool(dsn, min_size=17, max_size=17)
        store = EventStore(pool)
        await pool.execute("CREATE TABLE raw_insert (id bigserial PRIMARY KEY, data jsonb)")
        sync = await pool.fetchval("SHOW synchronous_commit")

        async def raw(w: int, n: int) -> None:
            await pool.execute("INSERT INTO raw_insert (data) VALUES ($1)", PAYLOAD)

        results = {}
        for writers in (1, 16):
            streams = [f"request-{uuid.uuid4().hex}" for _ in range(writers)]

            async def append(w: int, n: int, streams: list[str] = streams) -> None:
                await store.append(
                    streams[w], [NewEvent(event_type="BenchAppended", data=PAYLOAD)], n
                )

            await run_writers(writers, 1.0, raw)  # warm up
            raw_rate = await run_writers(writers, seconds, raw)
            append_rate = await run_writers(writers, seconds, append)
            results[writers] = (raw_rate, append_rate)
        await pool.close()

    print(f"append throughput ({seconds:.0f} s per case, synchronous_commit={sync})")
    print(f"{'writers':>8} {'raw INSERT/s':>14} {'append/s':>10} {'ratio':>7}")
    for writers, (raw_rate, append_rate) in results.items():
        print(
            f"{writers:>8} {raw_rate:>14,.0f} {append_rate:>10,.0f} {append_rate / raw_rate:>7.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().seconds))
