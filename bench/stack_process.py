"""The PAO services (all but notification) in one process, for benchmarks that load them.

    PAO_DATABASE_URL=... PAO_KAFKA_BOOTSTRAP=... python -P bench/stack_process.py

Reads its settings from `PAO_*` like `pao serve`, creates the topics, runs the gateway, relay,
projector, request and fulfillment services until SIGTERM or SIGINT, then stops them. Run it
with `-P` so that bench/ is not on the import path (bench/requests.py would hide `requests`).
"""

from __future__ import annotations

import asyncio
import signal

from pao.contracts.topics import ALL_TOPICS
from pao.shared.kafka import ensure_topics
from pao.shared.keystore import KeyStore
from pao.shared.logs import configure_logging
from pao.shared.settings import Settings
from pao.stack.runtime import SERVICES, run_services

#: Notifications are not on the path from a submit to its JIRA issue.
BENCH_SERVICES = tuple(name for name in SERVICES if name != "notification")


async def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    keys = KeyStore.from_file(settings.keys_file) if settings.keys_file else KeyStore()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(settings, ALL_TOPICS)
    await run_services(settings, BENCH_SERVICES, stop, keys=keys)


if __name__ == "__main__":
    asyncio.run(main())
