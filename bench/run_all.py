"""Run every benchmark in turn and print its figures (see the README's benchmark section)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in (
    "append.py",
    "relay.py",
    "coldstart.py",
    "catalog_load.py",
    "catalog_api.py",
    "render.py",
    "request_flow.py",
    "submit_floor.py",
    "http_cache.py",
    "provisioning.py",
    "rest_actions.py",
    "in_flight.py",
):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
