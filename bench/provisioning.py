"""Automated provisioning with Terraform: PAO's time beyond Terraform's own for one create, and
creates per minute with a few requests in flight, each next to its floor (the same module applied
the simplest way, on the same machine, in the same run).

    uv run --frozen python bench/provisioning.py [--creates 20] [--floor-runs 10]
        [--databases 40] [--in-flight 4] [--floor-applies 40]

The item is postgresql-standard: a real PostgreSQL database and its owner role, made by
Terraform (catalog/modules/postgresql) in two steps, a plan job (init, state pull and push for
a new workspace, plan, show; the plan is stored) and then an apply job (init, show, apply,
output), with the state in PostgreSQL (the pg backend). Requests are for the dev environment (no
approval) and go through the gateway, signed; the PAO services run as `pao serve` processes
(gateway, relay, projector and request in one; fulfillment in another) on a fresh database and
a broker; the databases the requests make are on the same PostgreSQL server.

Terraform's own time is measured without changing PAO: PAO_TERRAFORM_BINARY names a small
wrapper script that runs the real terraform and notes its start, end, command and working
directory; the worker's working directory is named after the workspace
(`res-<resource>-database`, see `workspace_slug`), which ties each run to its request. The
wrapper's own start (a bash, about 2 ms a run) falls in PAO's overhead. CPU seconds per create
come from /proc: PAO's processes, terraform with the psql it starts, PostgreSQL and the broker
(when this run started them) and this process, and "anything else": other work on the machine,
or the PostgreSQL server named by PAO_DATABASE_URL.

1. --creates requests one after another (after one warm-up): end to end is the request's
   finished_at - created_at (store clocks, from GET /requests/{id}); terraform is the sum of the
   wall times of the terraform processes run for it; PAO's overhead is the difference, split
   into before the first terraform, between terraform runs of one job, between the plan job and
   the apply job, and after the last. Floor: `terraform init && terraform apply -auto-approve`
   of the module in a fresh directory with local state, --floor-runs times one after another.
2. --databases requests, --in-flight at a time (a new one submitted as soon as one completes,
   seen in the read model, polled every 20 ms): completed creates per minute, from the first
   created_at to the last finished_at. Floor: --floor-applies plain init + apply runs,
   --in-flight at once, each in its own directory: applies per minute.

Every database and role the run makes (their names start with pbench_<run>_) is dropped at the
end; the terraform states live in the fresh PAO database, dropped with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
import yaml

from infra import broker, fresh_database, percentile
from pao.fulfillment.terraform import workspace_slug
from pao.shared.database import create_pool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from support.processes import ServiceProcesses, call  # noqa: E402

ITEM = "postgresql-standard"
ACTION = "database"
MODULE = REPO / "catalog" / "modules" / "postgresql"
POLL = 0.02
DISTURBED = 0.25  # cores used by anything else that make a note worth printing
REQUEST_DEADLINE = 300.0
TERMINAL = frozenset({"completed", "failed", "aborted"})
# What PAO sets for every terraform it runs; the floor runs get the same.
TF_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"}

WRAPPER = """#!/bin/bash
# Runs the real terraform, then notes when it started and ended, the command and the directory.
start=$EPOCHREALTIME
{real} "$@"
rc=$?
end=$EPOCHREALTIME
command=$1
if [ "$1" = state ]; then command="state $2"; fi
printf '%s\\t%s\\t%s\\t%s\\t%s\\n' "$start" "$end" "$command" "$PWD" "$rc" >> {log}
exit $rc
"""


@dataclass(frozen=True)
class TfRun:
    """One terraform process, as the wrapper saw it."""

    start: float
    end: float
    command: str
    work_dir: str
    rc: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Create:
    """One request for a database and what it took."""

    request_id: str
    status: str
    created: float = 0.0
    finished: float = 0.0
    client_seconds: float = 0.0
    runs: list[TfRun] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.finished - self.created

    @property
    def terraform(self) -> float:
        return sum(r.seconds for r in self.runs)

    def overhead_parts(self) -> dict[str, float]:
        """PAO's time outside terraform: before the first run, between runs of one job (a job
        starts with `init`), between jobs, and after the last run; they add up to the
        overhead, as one workspace's runs never overlap."""
        parts = dict.fromkeys(("before", "within", "between", "after"), 0.0)
        if not self.runs:
            return parts
        parts["before"] = self.runs[0].start - self.created
        for previous, run in zip(self.runs, self.runs[1:], strict=False):
            gap = run.start - previous.end
            parts["between" if run.command == "init" else "within"] += gap
        parts["after"] = self.finished - self.runs[-1].end
        return parts


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far, by whom."""

    at: float
    machine: float  # every process on the machine
    pao: float  # PAO's `pao serve` processes themselves
    terraform: float  # terraform processes (and the psql they start): PAO's and the floor's
    stack: float  # PostgreSQL and the broker, where this run started them
    bench: float  # this load generator

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))

    @property
    def other(self) -> float:
        return self.machine - self.pao - self.terraform - self.stack - self.bench


def _cpu_of(process: psutil.Process) -> float:
    """A process's own CPU time and that of the children it has reaped."""
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def cpu_now(pao_pids: list[int]) -> Cpu:
    """What the machine, the PAO processes, the terraform processes they waited for (with their
    psql), this process's other children (PostgreSQL, the broker, the floor's terraform runs)
    and this process have used so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    machine = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    pao = terraform = stack = 0.0
    for pid in pao_pids:
        times = psutil.Process(pid).cpu_times()
        pao += times.user + times.system
        terraform += times.children_user + times.children_system
    me = psutil.Process()
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.pid in pao_pids or any(p.pid in pao_pids for p in child.parents()):
                continue  # a PAO process, or one it started: counted above once it ends
            stack += _cpu_of(child)  # the postmaster's include its ended backends
    own = os.times()
    return Cpu(
        time.perf_counter(),
        machine / os.sysconf("SC_CLK_TCK"),
        pao,
        terraform + own.children_user + own.children_system,  # the floor's terraform runs
        stack,
        own.user + own.system,
    )


def report_cpu(used: Cpu, count: int, what: str) -> None:
    """CPU seconds per `what` (per second of the span when count is 0), by whom."""
    cores = os.cpu_count() or 1
    per = count or used.at
    print(
        f"  CPU {what}: PAO's processes {used.pao / per:.2f} s, terraform and its psql "
        f"{used.terraform / per:.2f} s, PostgreSQL and the broker {used.stack / per:.2f} s, "
        f"this load generator {used.bench / per:.2f} s, anything else {used.other / per:.2f} s;"
        f" the machine {used.machine / used.at / cores:.0%} busy ({cores} cores)",
        flush=True,
    )
    if used.other / used.at > DISTURBED:
        print(
            f"  NOTE: anything else used {used.other / used.at:.0%} of a core meanwhile (other "
            f"work on the machine, or PAO_DATABASE_URL's server): the times above are slowed"
        )


class Completions:
    """Waits for requests to end, with one query of the read model per poll for all of them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def ended(self, request_id: str, timeout: float = REQUEST_DEADLINE) -> str:
        """The request's status once it is terminal ('timeout' if it is not in time)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return "timeout"
        finally:
            self._waiting.pop(request_id, None)

    async def _poll(self) -> None:
        while self._waiting:
            rows = await self._pool.fetch(
                "SELECT request_id, status FROM requests WHERE request_id = ANY($1::text[])",
                list(self._waiting),
            )
            for row in rows:
                future = self._waiting.get(row["request_id"])
                if future is not None and not future.done() and row["status"] in TERMINAL:
                    future.set_result(row["status"])
            await asyncio.sleep(POLL)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def admin_url_of(dsn: str) -> str:
    """The server's `postgres` database, as the module's admin_url (no password in it)."""
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, "/postgres", "", ""))


def write_wrapper(tmp: Path, real: str) -> tuple[Path, Path]:
    log = tmp / "terraform-runs.tsv"
    log.touch()
    wrapper = tmp / "terraform-timed"
    wrapper.write_text(WRAPPER.format(real=shlex.quote(real), log=shlex.quote(str(log))))
    wrapper.chmod(0o755)
    return wrapper, log


def read_runs(log: Path) -> dict[str, list[TfRun]]:
    """The wrapper's notes, by the name of the working directory (the workspace's slug)."""
    runs: dict[str, list[TfRun]] = defaultdict(list)
    for line in log.read_text().splitlines():
        start, end, command, work_dir, rc = line.split("\t")
        run = TfRun(
            float(start.replace(",", ".")),
            float(end.replace(",", ".")),
            command,
            work_dir,
            int(rc),
        )
        runs[Path(work_dir).name].append(run)
    for found in runs.values():
        found.sort(key=lambda r: r.start)
    return runs


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Provisioning:
    """Submits creates through the gateway and ties each to its terraform runs."""

    def __init__(self, url: str, completions: Completions, log: Path, prefix: str) -> None:
        self.url = url
        self.completions = completions
        self.log = log
        self.prefix = prefix
        self.made = 0

    def next_name(self, kind: str) -> str:
        self.made += 1
        return f"{self.prefix}{kind}{self.made:03d}"

    async def create(self, db_name: str) -> Create:
        sent = time.perf_counter()
        answer = await call(
            self.url,
            "POST",
            "/requests",
            body={
                "item_id": ITEM,
                "inputs": {
                    "db_name": db_name,
                    "environment": "dev",
                    "connection_limit": 20,
                    "owner_email": "bench@example.com",
                },
            },
            extra_headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        request_id = answer["request_id"]
        status = await self.completions.ended(request_id)
        seen = time.perf_counter()
        return Create(request_id, status, client_seconds=seen - sent)

    async def complete(self, creates: list[Create]) -> None:
        """Fill in the store's clocks and the terraform runs of each create."""
        runs = read_runs(self.log)
        for c in creates:
            found = await call(self.url, "GET", f"/requests/{c.request_id}")
            if c.status != "completed":
                print(f"  {c.request_id} ended {c.status}: {found.get('last_error')}")
                continue
            c.created = epoch(found["created_at"])
            c.finished = epoch(found["finished_at"])
            c.runs = runs.get(workspace_slug(f"res-{found['resource_id']}-{ACTION}"), [])


async def plain_apply(
    terraform: str, work: Path, admin_url: str, db_name: str
) -> tuple[float, float]:
    """The module applied the simplest way, in a fresh directory with local state: the wall
    times of `terraform init` and `terraform apply -auto-approve`."""
    shutil.copytree(MODULE, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    variables = {
        "admin_url": admin_url,
        "db_name": db_name,
        "connection_limit": 20,
        "labels": {"environment": "dev", "owner": "bench@example.com"},
    }
    (work / "terraform.tfvars.json").write_text(json.dumps(variables))
    env = {**os.environ, **TF_ENV}
    times = []
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            terraform,
            *args,
            cwd=work,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        times.append(time.perf_counter() - started)
        if process.returncode != 0:
            raise RuntimeError(f"terraform {args[0]} failed:\n{output.decode(errors='replace')}")
    return times[0], times[1]


async def plain_applies(
    terraform: str, root: Path, admin_url: str, names: list[str], at_once: int
) -> tuple[list[tuple[float, float]], float]:
    """Plain init + apply for each name, `at_once` at a time: their times and the wall time."""
    queue = list(names)
    times: list[tuple[float, float]] = []

    async def worker() -> None:
        while queue:
            name = queue.pop(0)
            times.append(await plain_apply(terraform, root / name, admin_url, name))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(at_once)))
    return times, time.perf_counter() - started


async def drop_made(admin_url: str, prefix: str) -> tuple[int, int]:
    """Drop every database and role of this run; how many of each."""
    conn = await asyncpg.connect(admin_url)
    try:
        pattern = prefix.replace("_", r"\_") + "%"
        databases = [
            r["datname"]
            for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", pattern
            )
        ]
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        roles = [
            r["rolname"]
            for r in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", pattern)
        ]
        for name in roles:
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        return len(databases), len(roles)
    finally:
        await conn.close()


def spread(values: list[float]) -> str:
    if not values:
        return "      -        -        -"
    return f"{percentile(values, 50):7.2f}  {percentile(values, 90):7.2f}  {max(values):7.2f}"


def header(title: str) -> None:
    print(f"{title:<64} {'p50':>7}  {'p90':>7}  {'max':>7}")


def row(label: str, values: list[float]) -> None:
    print(f"  {label:<62} {spread(values)}")


def report_sequential(creates: list[Create], floor: list[tuple[float, float]]) -> None:
    done = [c for c in creates if c.status == "completed" and c.runs]
    header(f"figure 1: one create at a time, {len(done)}/{len(creates)} completed (seconds)")
    row("end to end: created_at -> finished_at (store clocks)", [c.seconds for c in done])
    row(
        f"end to end at the client: POST -> completed seen (polled {POLL * 1000:.0f} ms)",
        [c.client_seconds for c in done],
    )
    row("terraform: sum of its processes' wall times", [c.terraform for c in done])
    overhead = [c.seconds - c.terraform for c in done]
    row("PAO's overhead: end to end - terraform", overhead)
    parts = [c.overhead_parts() for c in done]
    for key, label in (
        ("before", "  before the first terraform (submit -> plan job's init)"),
        ("within", "  between terraform runs of one job"),
        ("between", "  between the plan job and the apply job"),
        ("after", "  after the last terraform (output -> completed)"),
    ):
        row(label, [p[key] for p in parts])
    if done:
        share = statistics.median(o / c.seconds for o, c in zip(overhead, done, strict=True))
        print(f"  overhead share of end to end, p50: {share:.0%}")
    per_create = [len(c.runs) for c in done]
    commands: Counter[str] = Counter()
    for c in done:
        commands.update(r.command for r in c.runs)
    order = list(dict.fromkeys(r.command for c in done for r in c.runs))
    if done:
        print(
            f"  terraform invocations per create: {statistics.median(per_create):.0f} "
            f"(min {min(per_create)}, max {max(per_create)}): "
            + ", ".join(f"{cmd} x{commands[cmd] / len(done):.3g}" for cmd in order)
        )
        by_command = {
            cmd: statistics.median(sum(r.seconds for r in c.runs if r.command == cmd) for c in done)
            for cmd in order
        }
        print(
            "  terraform time per create by command, p50: "
            + ", ".join(f"{cmd} {seconds:.2f} s" for cmd, seconds in by_command.items())
        )
    inits, applies = [f[0] for f in floor], [f[1] for f in floor]
    totals = [a + b for a, b in floor]
    print(
        f"  floor: terraform init && terraform apply -auto-approve, fresh directory, local state,"
        f" {len(floor)} runs:"
    )
    row("  init + apply", totals)
    row("  init", inits)
    row("  apply", applies)
    if done and floor:
        tf = statistics.median(c.terraform for c in done)
        base = statistics.median(totals)
        end = statistics.median(c.seconds for c in done)
        print(
            f"  p50s: PAO's terraform time is {tf / base:.2f}x the floor ({tf - base:+.2f} s: the "
            f"two steps and the pg backend); end to end is {end / base:.2f}x the floor "
            f"({end - base:+.2f} s)"
        )


def report_concurrent(
    creates: list[Create], at_once: int, floor: list[tuple[float, float]], floor_wall: float
) -> None:
    done = [c for c in creates if c.status == "completed" and c.runs]
    header(f"figure 2: {len(creates)} creates, {at_once} in flight (seconds)")
    if done:
        span = max(c.finished for c in done) - min(c.created for c in done)
        row("end to end per create: created_at -> finished_at", [c.seconds for c in done])
        row("terraform per create", [c.terraform for c in done])
        row("overhead per create", [c.seconds - c.terraform for c in done])
        print(
            f"  {len(done)}/{len(creates)} completed in {span:.1f} s (first created_at -> last "
            f"finished_at): {len(done) / span * 60:.1f} creates per minute"
        )
    if floor:
        row("  floor: plain init + apply, each", [a + b for a, b in floor])
        print(
            f"  floor: {len(floor)} plain init + apply runs, {at_once} at once in separate "
            f"directories, in {floor_wall:.1f} s: {len(floor) / floor_wall * 60:.1f} applies "
            f"per minute"
        )
    if done and floor:
        rate = len(done) / span * 60
        floor_rate = len(floor) / floor_wall * 60
        print(f"  PAO's creates per minute are {rate / floor_rate:.0%} of the floor's")


async def measure(
    args: argparse.Namespace,
    tmp: Path,
    processes: ServiceProcesses,
    pool: asyncpg.Pool,
    log: Path,
    admin_url: str,
    prefix: str,
) -> None:
    pids = [p.process.pid for p in processes.processes.values() if p.process is not None]

    def cpu() -> Cpu:
        return cpu_now(pids)

    completions = Completions(pool)
    pao = Provisioning(processes.gateway_url, completions, log, prefix)
    floor_root = tmp / "floor"
    floor_root.mkdir()
    try:
        warm = await pao.create(pao.next_name("w"))
        await pao.complete([warm])
        print(
            f"warm-up create: {warm.status} in {warm.client_seconds:.1f} s "
            f"({len(warm.runs)} terraform runs)",
            flush=True,
        )
        before = cpu()
        await asyncio.sleep(args.idle_seconds)
        print(f"idle stack, {args.idle_seconds:.0f} s:")
        report_cpu(cpu() - before, 0, "per second")
        before = cpu()
        floor, _ = await plain_applies(
            args.terraform,
            floor_root,
            admin_url,
            [f"{prefix}f{n:03d}" for n in range(args.floor_runs)],
            1,
        )
        floor_cpu = cpu() - before
        before = cpu()
        sequential = []
        for _ in range(args.creates):
            sequential.append(await pao.create(pao.next_name("s")))
        sequential_cpu = cpu() - before
        await pao.complete(sequential)
        report_sequential(sequential, floor)
        report_cpu(sequential_cpu, len(sequential), "per create")
        report_cpu(floor_cpu, len(floor), "per plain init + apply")
        print(flush=True)

        before = cpu()
        concurrent_floor, floor_wall = await plain_applies(
            args.terraform,
            floor_root,
            admin_url,
            [f"{prefix}g{n:03d}" for n in range(args.floor_applies)],
            args.in_flight,
        )
        floor_cpu = cpu() - before
        left = args.databases
        concurrent: list[Create] = []

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                concurrent.append(await pao.create(pao.next_name("c")))

        before = cpu()
        await asyncio.gather(*(client() for _ in range(args.in_flight)))
        concurrent_cpu = cpu() - before
        await pao.complete(concurrent)
        report_concurrent(concurrent, args.in_flight, concurrent_floor, floor_wall)
        report_cpu(concurrent_cpu, len(concurrent), "per create")
        report_cpu(floor_cpu, len(concurrent_floor), "per plain init + apply")
    finally:
        await completions.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        wrapper, log = write_wrapper(tmp, args.terraform)
        async with fresh_database() as dsn, broker() as bootstrap:
            admin_url = admin_url_of(dsn)
            prefix = f"pbench_{uuid.uuid4().hex[:6]}_"
            environments = tmp / "environments.yaml"
            environments.write_text(
                yaml.safe_dump({e: {"postgres_admin_url": admin_url} for e in ("dev", "prod")})
            )
            processes = ServiceProcesses.configured(
                tmp,
                database_url=dsn,
                kafka=bootstrap,
                jira="http://127.0.0.1:9",
                PAO_ENVIRONMENTS_FILE=str(environments),
                PAO_TERRAFORM_BINARY=str(wrapper),
                PAO_LOG_LEVEL="warning",
            )
            processes.start("core", "gateway", "relay", "projector", "request")
            processes.start("worker", "fulfillment")
            try:
                await processes.ready()
                pool = await create_pool(dsn, min_size=1, max_size=2, application_name="bench")
                try:
                    await measure(args, tmp, processes, pool, log, admin_url, prefix)
                finally:
                    await pool.close()
            finally:
                dead = [name for name, alive in processes.alive().items() if not alive]
                await processes.stop_all()
                if dead:
                    print(f"stopped early: {dead}\n{processes.logs(*dead, lines=10)}")
                databases, roles = await drop_made(admin_url, prefix)
                print(f"dropped the {databases} databases and {roles} roles the run made")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", type=int, default=20, help="figure 1: creates, one at a time")
    parser.add_argument("--floor-runs", type=int, default=10, help="figure 1: plain applies")
    parser.add_argument("--databases", type=int, default=40, help="figure 2: creates in all")
    parser.add_argument("--in-flight", type=int, default=4, help="figure 2: creates at once")
    parser.add_argument("--floor-applies", type=int, default=40, help="figure 2: plain applies")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="idle CPU measured")
    parser.add_argument("--terraform", default=shutil.which("terraform") or "terraform")
    os.environ.setdefault("PAO_LOG_LEVEL", "warning")
    asyncio.run(main(parser.parse_args()))
