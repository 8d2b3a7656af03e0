"""`pao up` start-up: seconds from launch until GET /api/v1/health/ready answers 200.

    uv run python bench/coldstart.py [--runs 3]

"cold" starts on an empty data directory (initdb, migrations, broker); "warm" reuses it.
Uses embedded PostgreSQL and tansu: PAO_DATABASE_URL and PAO_KAFKA_BOOTSTRAP are ignored.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pao.devstack.ports import free_port

BIN = Path(sys.executable).parent


def start_once(data_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAO_")}
    env["PAO_CONFIG_FILE"] = str(data_dir.parent / "devctl.yaml")
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "pao"), "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("pao up exited")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/health/ready", timeout=2
                ) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def main(runs: int) -> None:
    cold, warm = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="pao-coldstart-") as tmp:
            data_dir = Path(tmp) / "state"
            cold.append(start_once(data_dir))
            warm.append(start_once(data_dir))
    print(
        f"pao up to ready, {runs} runs: cold median {statistics.median(cold):.2f} s "
        f"(max {max(cold):.2f} s), warm median {statistics.median(warm):.2f} s "
        f"(max {max(warm):.2f} s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    main(parser.parse_args().runs)
