"""Service boundaries, before and after, in one run: bytes per RequestSubmitted and submits/s.

    uv run python bench/boundaries.py [--before REF] [--clients 100] [--seconds 10] [--rounds 2]

`--before` names a commit of this repository to compare with (default: the last commit before
requests pinned their item by hash). It is checked out into a temporary git worktree, given its
own virtual environment (`uv sync --frozen`, from uv's cache), and run exactly like the working
tree: a fresh database migrated by that tree's own `pao migrate`, then `pao serve` in three
processes (gateway; relay + projector; request + fulfillment) on a broker and an embedded JIRA,
loaded by the same signed clients as bench/request_flow.py (figure 1). The trees take turns,
`--rounds` times each, so that neither always runs on a warmer machine.

Printed per tree and round: submits/s with p50/p99 latency, and the size of the stored
RequestSubmitted events (the JSON text and the jsonb column, averaged over every submit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from infra import broker, fresh_database, percentile
from pao.devstack.jira import EmbeddedJira
from request_flow import Submitter, report_log, run_clients, start_stack

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
#: The last commit before `RequestSubmitted` pinned its item by content hash.
DEFAULT_BEFORE = "18914cf"


@dataclass(frozen=True)
class Tree:
    """A checkout of PAO to run: its name, its `pao` command and its catalog."""

    name: str
    pao: Path
    catalog: Path


def checkout(ref: str, into: Path) -> Tree:
    """A worktree of `ref` with its own environment, ready to run."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), ref],
        check=True,
        capture_output=True,
    )
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run([uv, "sync", "--frozen", "--quiet"], cwd=into, check=True, env=env)
    return Tree(f"before ({ref})", into / ".venv" / "bin" / "pao", into / "catalog")


async def measure(tree: Tree, clients: int, seconds: float, tmp: Path) -> str:
    async with fresh_database(migrated=False) as dsn, broker() as bootstrap:
        await asyncio.to_thread(
            subprocess.run,
            [str(tree.pao), "migrate"],
            env={**os.environ, "PAO_DATABASE_URL": dsn, "PAO_LOG_LEVEL": "warning"},
            check=True,
            capture_output=True,
        )
        jira = EmbeddedJira(tmp)
        jira_url = await jira.start()
        stack, url = await start_stack(
            dsn, bootstrap, jira_url, 30.0, tmp, pao=tree.pao, catalog=tree.catalog
        )
        try:
            connector = aiohttp.TCPConnector(limit=clients)
            async with aiohttp.ClientSession(connector=connector) as http:
                submitter = Submitter(http, url)
                await run_clients(submitter, clients, seconds=2)  # warm up
                load = await run_clients(submitter, clients, seconds=seconds)
            conn = await asyncpg.connect(dsn)
            try:
                sizes = await conn.fetchrow(
                    "SELECT count(*) AS n, avg(octet_length(data::text)) AS text_bytes, "
                    "avg(pg_column_size(data)) AS stored_bytes FROM events "
                    "WHERE event_type = 'RequestSubmitted'"
                )
            finally:
                await conn.close()
        finally:
            for process in stack:
                crashed = not process.running
                await process.stop(timeout=30)
                report_log(process, crashed)
            await jira.stop()
    rate = len(load.latencies) / load.seconds
    return (
        f"{tree.name:>22}: {rate:,.0f} submits/s, p50 {percentile(load.latencies, 50):.0f} ms, "
        f"p99 {percentile(load.latencies, 99):.0f} ms, errors {sum(load.errors.values())}; "
        f"RequestSubmitted {sizes['text_bytes']:,.0f} B as JSON text, "
        f"{sizes['stored_bytes']:,.0f} B stored (jsonb), {sizes['n']:,} events"
    )


async def main(before: str, clients: int, seconds: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        old = await asyncio.to_thread(checkout, before, tmp / "before")
        try:
            now = Tree("after (working tree)", BIN / "pao", REPO / "catalog")
            print(f"{clients} signed clients, {seconds:.0f} s per run, {rounds} round(s)")
            for round_ in range(1, rounds + 1):
                for tree in (old, now) if round_ % 2 else (now, old):
                    work = tmp / f"{tree.name.split()[0]}-{round_}"
                    work.mkdir()
                    print(f"round {round_} " + await measure(tree, clients, seconds, work))
        finally:
            await asyncio.to_thread(
                subprocess.run,
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before")],
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", default=DEFAULT_BEFORE)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.before, args.clients, args.seconds, args.rounds))
