"""Runs Terraform modules with their state in PostgreSQL (Terraform's built-in `pg` backend).

Two ways to run a module: `apply` plans and applies in one step; `plan` saves a plan file (handed
back as bytes for the caller to keep) and `apply_plan` applies exactly that file later, on any
worker. Both stream Terraform's machine-readable messages as they arrive and stop on request.

State locking: the pg backend locks a workspace with a session-level PostgreSQL advisory lock
(the single-bigint form, scoped to the database) whose key is the id of the workspace's row in
`<schema>.states`. The ids come from one sequence shared by every schema, so keys are unique in
the database. Key -1 guards the creation of a state row: a first run holds it throughout, every
other run takes it for a moment while locking. Such a lock lasts as long as terraform's database
session. A killed worker takes its terraform with it and the session ends, but a worker whose host
vanished leaves the session open until TCP gives up on it; each run therefore names its sessions
`application_name=pao-tf:<run tag>`, so that `lock_holders` tells which run holds a workspace and
`release_lock` can end the sessions of runs that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from pao.fulfillment.state_logins import SKIP_CREATION, StateLogins, with_login
from pao.shared import tracing
from pao.shared.database_access import DatabaseAccess

_VAR_FILE = "pao-run.tfvars.json"
_PLAN_FILE = "pao-run.tfplan"
_EMPTY_STATE_FILE = "pao-empty-state.json"
_BACKEND_FILE = "backend.tf"
_BACKEND_BLOCK = re.compile(r'^\s*backend\s+"([A-Za-z0-9_-]+)"', re.MULTILINE)
_MIN_REDACTED_LENGTH = 4
_MESSAGE_LINES = 20
_STOP_POLL = 0.5
# One line of `-json` output holds one message; resource values can make it long.
_LINE_LIMIT = 32 * 1024 * 1024
_MASKED = "***"
_UNKNOWN = "(known after apply)"
_STALE_MARKER = "saved plan is stale"
# Where each workspace's runs get their HOME (a workspace slug never starts with a dot).
_HOMES = ".home"
# What terraform takes from the worker's environment without being told: nothing secret.
_INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
# The worker's own variable values and registry tokens are not the module's business.
_TF_WITHHELD = ("TF_VAR_", "TF_TOKEN_")

_APPLICATION_PREFIX = "pao-tf:"
# PostgreSQL keeps the first 63 bytes of application_name; a longer tag would come back cut.
_RUN_TAG_LENGTH = 63 - len(_APPLICATION_PREFIX)
_RUN_TAG_CHARS = re.compile(r"[^A-Za-z0-9:._-]")
_CREATION_LOCK = -1
_TERMINATE_WAIT_MS = 5000
_PR_SET_PDEATHSIG = 1

# Failures that say nothing about the module: another run holds the state, or PostgreSQL could
# not be reached for a moment. Everything else (syntax, validation, plan errors) is permanent.
_TRANSIENT_MARKERS = (
    "error acquiring the state lock",
    "error releasing the state lock",
    "connection refused",
    "connection reset",
    "dial tcp",
    "i/o timeout",
    "no such host",
    "broken pipe",
    "unexpected eof",
    "too many clients",
    "the database system is starting up",
    "the database system is shutting down",
    "terminating connection",
    "server closed the connection",
    "could not connect to server",
)

# Races between first inits in one database: whoever loses finds the objects on the next try.
_INIT_RACES = ("duplicate key value violates unique constraint",)

# The machine-readable messages worth showing a person; `version`, `outputs` (which can carry
# values) and the per-resource refresh chatter are left out.
_MESSAGE_TYPES = frozenset(
    {
        "log",
        "diagnostic",
        "resource_drift",
        "planned_change",
        "change_summary",
        "apply_start",
        "apply_progress",
        "apply_complete",
        "apply_errored",
        "provision_start",
        "provision_progress",
        "provision_complete",
        "provision_errored",
    }
)

_ACTIONS = {
    ("no-op",): "no-op",
    ("create",): "create",
    ("read",): "read",
    ("update",): "update",
    ("delete",): "delete",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}
_COUNTED = {"create": "add", "update": "change", "delete": "destroy", "replace": "replace"}

MessageSink = Callable[[dict[str, Any]], Awaitable[None]]
StopCheck = Callable[[], Awaitable[bool]]


class TerraformError(Exception):
    """A Terraform run that failed; `transient` says whether running it again may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class StalePlan(TerraformError):
    """The saved plan no longer fits the state (another run changed it); plan again."""


class Interrupted(TerraformError):
    """The run was stopped on request; the state holds whatever Terraform finished before."""


@dataclass(frozen=True)
class Plan:
    """A saved plan file and what applying it would change."""

    # The file holds the variables' values, sensitive ones too: store it like a secret.
    plan_file: bytes = field(repr=False)
    changes: list[dict[str, Any]]
    counts: dict[str, int]
    destroy: bool
    output_changes: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.output_changes)

    @property
    def destroys_or_replaces(self) -> bool:
        return bool(self.counts.get("destroy") or self.counts.get("replace"))


@dataclass(frozen=True)
class Applied:
    """The outputs after an apply; the values of sensitive outputs are left out, only named."""

    outputs: dict[str, Any]
    sensitive: frozenset[str]


@dataclass(frozen=True)
class LockHolder:
    """A database session that holds a workspace's state lock (or the creation lock, key -1)."""

    pid: int
    application_name: str
    run_tag: str | None
    backend_start: datetime | None
    key: int


@dataclass
class _Call:
    """What the terraform commands of one public call share."""

    work_dir: Path
    home: Path
    deadline: float
    secrets: list[str]
    conn_str: str
    on_message: MessageSink | None = None
    should_stop: StopCheck | None = None
    workspace: str = ""
    #: the state login's user when it signs in with IAM tokens (a fresh one per command)
    iam_user: str | None = None


def workspace_slug(workspace: str) -> str:
    """`workspace` reduced to [a-z0-9_], distinct for distinct names, short enough for a schema."""
    slug = re.sub(r"[^a-z0-9_]+", "_", workspace.lower()).strip("_")
    if slug != workspace or len(slug) > 40:
        digest = hashlib.sha256(workspace.encode()).hexdigest()[:8]
        slug = f"{slug[:40]}_{digest}".lstrip("_")
    return slug


def schema_for(workspace: str) -> str:
    """The PostgreSQL schema that holds the workspace's state."""
    return f"terraform_{workspace_slug(workspace)}"


def run_tag_label(run_tag: str) -> str:
    """`run_tag` as its sessions carry it: [A-Za-z0-9:._-] only, at most 56 characters."""
    label = _RUN_TAG_CHARS.sub("_", run_tag)
    if len(label) > _RUN_TAG_LENGTH:
        digest = hashlib.sha256(run_tag.encode()).hexdigest()[:8]
        label = f"{label[: _RUN_TAG_LENGTH - 9]}.{digest}"
    return label


def backend_conn_str(
    dsn: str, *, application_name: str | None = None, access: DatabaseAccess | None = None
) -> str:
    """The DSN for the pg backend, which insists on TLS unless told otherwise: the TLS settings
    (PAO_DATABASE_SSLMODE, PAO_DATABASE_SSLROOTCERT) when given, else the DSN's, else none."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    tls = access.libpq_params() if access is not None else []
    if tls:
        named = {name for name, _ in tls}
        query = [(name, value) for name, value in query if name not in named] + tls
    if not any(name == "sslmode" for name, _ in query):
        query.append(("sslmode", "disable"))
    if application_name is not None:
        query = [(name, value) for name, value in query if name != "application_name"]
        query.append(("application_name", application_name))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _strings(item)


def _secrets_in(variables: Mapping[str, Any], dsn: str) -> list[str]:
    """Every text that must not appear in an error message, longest first."""
    found: set[str] = set()
    for text in _strings(dict(variables)):
        if len(text) >= _MIN_REDACTED_LENGTH:
            found.add(text)
            # Terraform quotes the var file's source line, where the value is JSON-escaped.
            found.add(json.dumps(text)[1:-1])
    password = urlsplit(dsn).password
    if password:
        found.add(password)
    return sorted(found, key=len, reverse=True)


def terraform_env(
    worker_env: Mapping[str, str],
    *,
    home: Path,
    conn_str: str,
    passthrough: Sequence[str] = (),
) -> dict[str, str]:
    """The environment terraform (and the module's provisioners) run with.

    A module is catalog code: its local-exec provisioners see everything terraform sees. So it
    gets what running terraform takes, and none of the worker's own settings or credentials
    (PAO_*, AWS_*, ...): the operator names any other variable a module needs in `passthrough`.
    """
    env = {name: worker_env[name] for name in _INHERITED if name in worker_env}
    env.update(
        (name, value)
        for name, value in worker_env.items()
        if name.startswith("TF_") and not name.startswith(_TF_WITHHELD)
    )
    env.update((name, worker_env[name]) for name in passthrough if name in worker_env)
    env.update(
        HOME=str(home),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        # Through the environment rather than -backend-config, so the connection string (which
        # may hold a password) is neither on a command line nor saved in .terraform/.
        PG_CONN_STR=conn_str,
    )
    env.setdefault("PATH", os.defpath)
    return env


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _meaningful_lines(stderr: str) -> list[str]:
    """Terraform's errors without box drawing, blank lines and warnings that precede them."""
    lines = [line.lstrip("╷│╵ ").rstrip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    first_error = next((i for i, line in enumerate(lines) if line.startswith("Error")), None)
    if first_error is not None:
        return lines[first_error : first_error + _MESSAGE_LINES]
    return lines[-_MESSAGE_LINES:]


class TerraformRunner:
    """Plans and applies Terraform modules, one run at a time per workspace, state in PostgreSQL."""

    def __init__(
        self,
        *,
        work_root: Path,
        state_dsn: str,
        binary: str = "terraform",
        timeout: float = 1800,
        lock_timeout: float = 60,
        interrupt_grace: float = 30,
        passthrough_env: Sequence[str] = (),
        state_logins: StateLogins | None = None,
        state_access: DatabaseAccess | None = None,
    ) -> None:
        self.work_root = work_root
        self._access = state_access or DatabaseAccess()
        self._logins = state_logins
        self.passthrough_env = tuple(passthrough_env)
        self.binary = binary
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.interrupt_grace = interrupt_grace
        self._state_dsn = state_dsn
        self._locks: dict[str, asyncio.Lock] = {}
        self._backend_ready = False
        self._first_init = asyncio.Lock()

    async def apply(
        self,
        module_dir: Path,
        variables: Mapping[str, Any],
        *,
        workspace: str,
        outputs: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Apply the module with `variables` in `workspace`; return the requested outputs."""
        slug = workspace_slug(workspace)
        # The pg backend locks the state too; this lock keeps two runs in this process from
        # sharing (and deleting) one working directory.
        async with self._locks.setdefault(slug, asyncio.Lock()):
            call = self._call(slug, variables, workspace=workspace)
            await self._prepare(module_dir, workspace, call)
            var_file = call.work_dir / _VAR_FILE
            try:
                _write_private(var_file, json.dumps(dict(variables), indent=2, default=str))
                await self._run(
                    call,
                    [
                        "apply",
                        "-input=false",
                        "-no-color",
                        "-auto-approve",
                        f"-lock-timeout={self.lock_timeout:.0f}s",
                        f"-var-file={_VAR_FILE}",
                    ],
                )
            finally:
                var_file.unlink(missing_ok=True)
            raw = await self._run(call, ["output", "-no-color", "-json"])
        values, _ = _outputs_of(raw)
        if not outputs:
            return values
        _require_outputs(module_dir, outputs, values)
        return {name: values[name] for name in outputs}

    async def plan(
        self,
        module_dir: Path,
        variables: Mapping[str, Any],
        *,
        workspace: str,
        destroy: bool = False,
        on_message: MessageSink | None = None,
        should_stop: StopCheck | None = None,
        run_tag: str | None = None,
    ) -> Plan:
        """Plan the module with `variables` in `workspace` (or its destruction); save the plan."""
        slug = workspace_slug(workspace)
        async with self._locks.setdefault(slug, asyncio.Lock()):
            call = self._call(
                slug, variables, on_message, should_stop, run_tag, workspace=workspace
            )
            await self._prepare(module_dir, workspace, call)
            var_file = call.work_dir / _VAR_FILE
            plan_path = call.work_dir / _PLAN_FILE
            args = [
                "plan",
                "-input=false",
                "-json",
                f"-out={_PLAN_FILE}",
                f"-var-file={_VAR_FILE}",
                f"-lock-timeout={self.lock_timeout:.0f}s",
            ]
            if destroy:
                args.append("-destroy")
            try:
                _write_private(var_file, json.dumps(dict(variables), indent=2, default=str))
                await self._run(call, args, stream=True)
                var_file.unlink(missing_ok=True)
                plan_file = plan_path.read_bytes()
                # The plan is made: reading it back is not worth interrupting.
                shown = await self._show(call, stoppable=False)
            finally:
                var_file.unlink(missing_ok=True)
                plan_path.unlink(missing_ok=True)
        return _summarize(plan_file, shown, destroy=destroy)

    async def apply_plan(
        self,
        module_dir: Path,
        plan_file: bytes,
        *,
        workspace: str,
        outputs: Sequence[str] = (),
        on_message: MessageSink | None = None,
        should_stop: StopCheck | None = None,
        run_tag: str | None = None,
    ) -> Applied:
        """Apply exactly the saved plan `plan_file` to `workspace`; return the outputs.

        Raises StalePlan when the state changed since the plan was made.
        """
        slug = workspace_slug(workspace)
        async with self._locks.setdefault(slug, asyncio.Lock()):
            call = self._call(slug, {}, on_message, should_stop, run_tag, workspace=workspace)
            # A plan is only made against a stored state, so there is no empty one to create.
            await self._prepare(module_dir, workspace, call, ensure_state=False)
            plan_path = call.work_dir / _PLAN_FILE
            try:
                _write_private(plan_path, plan_file)
                shown = await self._show(call)
                # The plan carries its variables; their values stay out of messages and errors.
                variables = {
                    name: entry.get("value")
                    for name, entry in (shown.get("variables") or {}).items()
                    if isinstance(entry, Mapping)
                }
                call.secrets = sorted(
                    {*call.secrets, *_secrets_in(variables, self._state_dsn)}, key=len, reverse=True
                )
                await self._run(
                    call,
                    [
                        "apply",
                        "-input=false",
                        "-json",
                        f"-lock-timeout={self.lock_timeout:.0f}s",
                        _PLAN_FILE,
                    ],
                    stream=True,
                )
            finally:
                plan_path.unlink(missing_ok=True)
            # The apply is done: reporting its outputs is not worth interrupting.
            raw = await self._run(call, ["output", "-no-color", "-json"], stoppable=False)
        values, sensitive = _outputs_of(raw)
        if not outputs:
            return Applied(values, frozenset(sensitive))
        if not _leaves_nothing(shown):
            _require_outputs(module_dir, outputs, {**values, **dict.fromkeys(sensitive)})
        return Applied(
            {name: values[name] for name in outputs if name in values},
            frozenset(name for name in outputs if name in sensitive),
        )

    async def lock_holders(self, workspace: str) -> list[LockHolder]:
        """The database sessions holding the workspace's state lock or the creation lock."""
        conn = await self._access.connect(self._state_dsn)
        try:
            return await _lock_holders(conn, schema_for(workspace))
        finally:
            await conn.close()

    async def release_lock(self, workspace: str, *, is_orphan: Callable[[str | None], bool]) -> int:
        """End the lock-holding sessions of runs that `is_orphan` says are gone; how many ended.

        `is_orphan` gets each holder's run tag (as `run_tag_label` made it), or None for a
        session that carries none.
        """
        conn = await self._access.connect(self._state_dsn)
        try:
            holders = await _lock_holders(conn, schema_for(workspace))
            waits = conn.get_server_version().major >= 14
            ended: set[int] = set()
            for holder in holders:
                if holder.pid in ended or not is_orphan(holder.run_tag):
                    continue
                # Matching backend_start too keeps a pid the server has reused since safe.
                if waits:  # PostgreSQL 14 and later wait until the session has ended
                    terminated = await conn.fetchval(
                        "SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity"
                        " WHERE pid = $1 AND backend_start IS NOT DISTINCT FROM $2",
                        holder.pid,
                        holder.backend_start,
                        _TERMINATE_WAIT_MS,
                    )
                else:
                    terminated = await conn.fetchval(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE pid = $1 AND backend_start IS NOT DISTINCT FROM $2",
                        holder.pid,
                        holder.backend_start,
                    )
                if terminated:
                    ended.add(holder.pid)
            return len(ended)
        finally:
            await conn.close()

    def _call(
        self,
        slug: str,
        variables: Mapping[str, Any],
        on_message: MessageSink | None = None,
        should_stop: StopCheck | None = None,
        run_tag: str | None = None,
        *,
        workspace: str = "",
    ) -> _Call:
        application_name = _APPLICATION_PREFIX + run_tag_label(run_tag) if run_tag else None
        return _Call(
            work_dir=self.work_root / slug,
            home=self.work_root / _HOMES / slug,
            deadline=time.monotonic() + self.timeout,
            secrets=_secrets_in(variables, self._state_dsn),
            conn_str=backend_conn_str(
                self._state_dsn, application_name=application_name, access=self._access
            ),
            on_message=on_message,
            should_stop=should_stop,
            workspace=workspace,
        )

    async def _prepare(
        self, module_dir: Path, workspace: str, call: _Call, *, ensure_state: bool = True
    ) -> None:
        """A fresh working directory with the module, initialised against the workspace."""
        backend = await asyncio.to_thread(_prepare_work_dir, module_dir, call.work_dir)
        await asyncio.to_thread(_fresh_private_dir, call.home)
        state_in_postgres = backend in (None, "pg")
        init = ["init", "-input=false", "-no-color"]
        if state_in_postgres:
            schema = schema_for(workspace)
            init.append(f"-backend-config=schema_name={schema}")
            if self._logins is not None and await self._logins.enabled():
                # The run (and its provisioners) log in as the workspace's own role.
                role, password = await self._logins.login(schema, valid_for=self.timeout)
                call.conn_str = with_login(call.conn_str, role, password)
                call.secrets = sorted({*call.secrets, password}, key=len, reverse=True)
                init.extend(SKIP_CREATION)
            elif self._access.token is not None:
                # The state login signs in with IAM tokens: each command gets one (below).
                call.iam_user = urlsplit(self._state_dsn).username or ""
        await self._init(call, init)
        if state_in_postgres and ensure_state:
            await self._ensure_state(call)

    async def _init(self, call: _Call, args: list[str]) -> None:
        # The pg backend creates a sequence shared by every schema on its first init in a
        # database; two first inits at once collide. Later inits find it and run in parallel.
        if self._backend_ready:
            await self._run(call, args, also_transient=_INIT_RACES)
            return
        async with self._first_init:
            await self._run(call, args, also_transient=_INIT_RACES)
            self._backend_ready = True

    async def _ensure_state(self, call: _Call) -> None:
        """Store an empty state for a new workspace before its first run.

        The pg backend takes one database-wide lock while it creates a workspace's state and holds
        it until that run ends; a first apply would block every other workspace for its whole
        duration. Creating the state first holds that lock only for a moment.
        """
        state = await self._pull_state(call)
        if state.get("lineage"):
            return
        state.update(serial=0, lineage=str(uuid.uuid4()))
        empty = call.work_dir / _EMPTY_STATE_FILE
        empty.write_text(json.dumps(state))
        try:
            await self._run(
                call, ["state", "push", f"-lock-timeout={self.lock_timeout:.0f}s", empty.name]
            )
        except Interrupted:
            raise
        except TerraformError:
            # Another worker may have created the state meanwhile, which is just as good.
            if not (await self._pull_state(call)).get("lineage"):
                raise
        finally:
            empty.unlink(missing_ok=True)

    async def _pull_state(self, call: _Call) -> dict[str, Any]:
        """The workspace's stored state; without a lineage when none is stored yet."""
        pulled = await self._run(call, ["state", "pull"])
        try:
            state = json.loads(pulled) if pulled.strip() else {}
        except ValueError:
            raise TerraformError("terraform state pull did not print a JSON state") from None
        if not isinstance(state, dict):
            raise TerraformError("terraform state pull did not print a JSON state")
        state.setdefault("version", 4)
        return state

    async def _show(self, call: _Call, *, stoppable: bool = True) -> dict[str, Any]:
        """The saved plan in the working directory, as Terraform's JSON plan representation."""
        raw = await self._run(call, ["show", "-no-color", "-json", _PLAN_FILE], stoppable=stoppable)
        try:
            shown = json.loads(raw)
        except ValueError:
            shown = None
        if not isinstance(shown, dict):
            raise TerraformError("terraform show -json did not print a JSON plan")
        return shown

    async def _run(
        self,
        call: _Call,
        args: list[str],
        *,
        also_transient: Sequence[str] = (),
        stream: bool = False,
        stoppable: bool = True,
    ) -> str:
        """Run one terraform command in a span of its own (`terraform init`, `terraform plan`)."""
        attributes = {"pao.terraform.command": args[0], "pao.terraform.workspace": call.workspace}
        with tracing.span(f"terraform {args[0]}", attributes=attributes):
            return await self._command(
                call, args, also_transient=also_transient, stream=stream, stoppable=stoppable
            )

    async def _command(
        self,
        call: _Call,
        args: list[str],
        *,
        also_transient: Sequence[str],
        stream: bool,
        stoppable: bool,
    ) -> str:
        """Run one terraform command in the call's working directory; its stdout.

        With `stream`, the command prints `-json` messages: each is handed to the call's
        `on_message` as it arrives, and the error diagnostics among them make the error. With
        `stoppable`, the call's `should_stop` is asked twice a second; once it says so, terraform
        gets SIGINT (it finishes the resource in progress, saves the state and releases the
        lock) and, if it has not exited after `interrupt_grace` seconds, SIGKILL.
        """
        command = f"terraform {args[0]}"
        should_stop = call.should_stop if stoppable else None
        if should_stop is not None and await should_stop():
            raise Interrupted(f"{command} was not started: the run was asked to stop")
        if call.iam_user is not None and self._access.token is not None:
            # Terraform connects when a command starts and keeps that session, so a token made
            # at most 10 minutes ago (good for 15) serves however long the command runs.
            token = await self._access.token()
            call.conn_str = with_login(call.conn_str, call.iam_user, token)
            call.secrets = sorted({*call.secrets, token}, key=len, reverse=True)
        env = terraform_env(
            os.environ, home=call.home, conn_str=call.conn_str, passthrough=self.passthrough_env
        )
        try:
            process = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                cwd=call.work_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=_LINE_LIMIT,
                start_new_session=True,  # its own process group: signals reach provisioners too
                preexec_fn=_die_with_parent(),
            )
        except FileNotFoundError:
            raise TerraformError(f"the terraform binary {self.binary!r} was not found") from None
        assert process.stdout is not None
        assert process.stderr is not None
        errors: list[str] = []

        async def read_stdout() -> bytes:
            assert process.stdout is not None
            if not stream:
                return await process.stdout.read()
            while True:
                try:
                    line = await process.stdout.readline()
                except ValueError:  # a message longer than _LINE_LIMIT: none worth showing is
                    continue
                if not line:
                    return b""
                await _forward(line, call, errors)

        work = asyncio.gather(read_stdout(), process.stderr.read(), process.wait())
        stopped = killed = False
        try:
            async with asyncio.timeout(max(0.0, call.deadline - time.monotonic())):
                if should_stop is not None:
                    stopped, killed = await self._watch(process, work, should_stop)
                stdout, stderr, _ = await work
        except TimeoutError:
            raise TerraformError(
                f"{command} did not finish within {self.timeout:.0f} s", transient=True
            ) from None
        finally:
            if not work.done():
                work.cancel()
            if process.returncode is None:
                _signal(process, signal.SIGKILL)
                await process.wait()
        text = stderr.decode(errors="replace")
        if stopped and process.returncode != 0:
            how = (
                f"did not stop within {self.interrupt_grace:.0f} s and was killed"
                if killed
                else "stopped after the resources in progress"
            )
            raise Interrupted(f"{command} was asked to stop and {how}")
        if process.returncode != 0:
            lowered = "\n".join([*errors, text]).lower()
            detail = "\n".join(errors[:_MESSAGE_LINES] or _meaningful_lines(text))
            detail = _redact(detail or f"exit status {process.returncode}", call.secrets)
            if _STALE_MARKER in lowered:
                raise StalePlan(f"{command} failed: {detail}")
            transient = any(m in lowered for m in (*_TRANSIENT_MARKERS, *also_transient))
            raise TerraformError(f"{command} failed: {detail}", transient=transient)
        return stdout.decode(errors="replace")

    async def _watch(
        self, process: asyncio.subprocess.Process, work: asyncio.Future[Any], should_stop: StopCheck
    ) -> tuple[bool, bool]:
        """Wait for `work`, interrupting the process on a stop request; (stopped, killed)."""
        while not work.done():
            await asyncio.wait({work}, timeout=_STOP_POLL)
            if work.done() or not await should_stop():
                continue
            _signal(process, signal.SIGINT)
            await asyncio.wait({work}, timeout=self.interrupt_grace)
            if work.done():
                return True, False
            _signal(process, signal.SIGKILL)
            return True, True
        return False, False


async def _forward(line: bytes, call: _Call, errors: list[str]) -> None:
    """Pass one `-json` message on to the call's sink; note the lines of an error diagnostic."""
    try:
        message = json.loads(line)
    except ValueError:
        return
    if not isinstance(message, dict):
        return
    diagnostic = message.get("diagnostic")
    if (
        message.get("type") == "diagnostic"
        and isinstance(diagnostic, dict)
        and diagnostic.get("severity") == "error"
    ):
        errors.append(f"Error: {diagnostic.get('summary', '')}".rstrip())
        detail = str(diagnostic.get("detail") or "")
        errors.extend(line for line in detail.splitlines() if line.strip())
    entry = _entry(message, call.secrets)
    if entry is not None and call.on_message is not None:
        await call.on_message(entry)


def _entry(message: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any] | None:
    """The message as a person is shown it, or None for messages not worth showing."""
    kind = message.get("type")
    text = str(message.get("@message") or "").strip()
    if kind not in _MESSAGE_TYPES or not text:
        return None
    level = message.get("@level")
    entry: dict[str, Any] = {
        "level": level if level in ("warn", "error") else "info",
        "message": _redact(text, secrets),
        "type": kind,
        "address": _address_of(message),
    }
    diagnostic = message.get("diagnostic")
    if isinstance(diagnostic, dict) and str(diagnostic.get("detail") or "").strip():
        entry["detail"] = _redact(str(diagnostic["detail"]).strip(), secrets)
    return entry


def _address_of(message: dict[str, Any]) -> str | None:
    for key in ("hook", "change"):
        part = message.get(key)
        resource = part.get("resource") if isinstance(part, dict) else None
        if isinstance(resource, dict) and resource.get("addr"):
            return str(resource["addr"])
    diagnostic = message.get("diagnostic")
    if isinstance(diagnostic, dict) and diagnostic.get("address"):
        return str(diagnostic["address"])
    return None


def _summarize(plan_file: bytes, shown: dict[str, Any], *, destroy: bool) -> Plan:
    """The Plan of Terraform's JSON representation of the saved plan."""
    hidden = _sensitive_values(shown)
    changes = []
    counts = dict.fromkeys(("add", "change", "destroy", "replace"), 0)
    for resource in shown.get("resource_changes") or []:
        change = resource.get("change") or {}
        actions = tuple(change.get("actions") or ())
        action = _ACTIONS.get(actions, "-".join(actions))
        if action == "no-op":
            continue
        if action in _COUNTED:
            counts[_COUNTED[action]] += 1
        changes.append(
            {
                "address": resource.get("address"),
                "type": resource.get("type"),
                "name": resource.get("name"),
                "action": action,
                "attributes": _attributes(change, hidden),
            }
        )
    output_changes = tuple(
        name
        for name, change in sorted((shown.get("output_changes") or {}).items())
        if tuple(change.get("actions") or ()) != ("no-op",)
    )
    return Plan(plan_file, changes, counts, destroy, output_changes)


def _sensitive_values(shown: dict[str, Any]) -> list[str]:
    """The texts of the plan's sensitive variables.

    Terraform's sensitive markers get lost on the way through some resources (terraform_data's
    `output` echoes its `input` unmarked), so these texts are masked wherever they turn up.
    """
    root = (shown.get("configuration") or {}).get("root_module") or {}
    declared = root.get("variables") or {}
    values = {
        name: entry.get("value")
        for name, entry in (shown.get("variables") or {}).items()
        if isinstance(entry, dict) and (declared.get(name) or {}).get("sensitive")
    }
    return _secrets_in(values, "")


def _attributes(change: dict[str, Any], hidden: Sequence[str]) -> list[dict[str, Any]]:
    """The top-level attributes the change alters, sensitive values masked."""
    before = change.get("before")
    after = change.get("after")
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    unknown = change.get("after_unknown")
    before_sensitive = change.get("before_sensitive")
    after_sensitive = change.get("after_sensitive")
    names = set(before) | set(after)
    if isinstance(unknown, dict):
        names |= {name for name, marks in unknown.items() if _marked(marks)}
    attributes = []
    for name in sorted(names):
        unknown_part = _part(unknown, name)
        old, new = before.get(name), after.get(name)
        if old == new and not _marked(unknown_part):
            continue
        attributes.append(
            {
                "name": name,
                "before": _shown(old, _part(before_sensitive, name), False, hidden),
                "after": _shown(new, _part(after_sensitive, name), unknown_part, hidden),
            }
        )
    return attributes


def _part(marks: Any, key: str | int) -> Any:
    """The markers (sensitive or unknown) for one attribute or element of a value."""
    if marks is True:
        return True
    if isinstance(marks, dict) and isinstance(key, str):
        return marks.get(key, False)
    if isinstance(marks, list) and isinstance(key, int) and key < len(marks):
        return marks[key]
    return False


def _marked(marks: Any) -> bool:
    """Whether any part of a value is marked."""
    if isinstance(marks, dict):
        return any(_marked(item) for item in marks.values())
    if isinstance(marks, list):
        return any(_marked(item) for item in marks)
    return marks is True


def _shown(value: Any, sensitive: Any, unknown: Any, hidden: Sequence[str]) -> Any:
    """`value` with its sensitive parts masked and its unknown parts named as such."""
    if sensitive is True:
        return _MASKED
    if unknown is True:
        return _UNKNOWN
    if isinstance(value, str):
        return _redact(value, hidden)
    if isinstance(value, dict) or (value is None and isinstance(unknown, dict)):
        value = value or {}
        keys = set(value)
        if isinstance(unknown, dict):
            keys |= {key for key, marks in unknown.items() if _marked(marks)}
        return {
            key: _shown(value.get(key), _part(sensitive, key), _part(unknown, key), hidden)
            for key in sorted(keys)
        }
    if isinstance(value, list):
        return [
            _shown(item, _part(sensitive, index), _part(unknown, index), hidden)
            for index, item in enumerate(value)
        ]
    return value


def _leaves_nothing(shown: dict[str, Any]) -> bool:
    """Whether applying the plan leaves no resources and no outputs (a destroy plan does)."""
    planned = shown.get("planned_values") or {}
    root = planned.get("root_module") or {}
    return (
        not planned.get("outputs") and not root.get("resources") and not root.get("child_modules")
    )


def _outputs_of(raw: str) -> tuple[dict[str, Any], set[str]]:
    """The values of `terraform output -json`'s plain outputs, and the sensitive ones' names."""
    try:
        printed = json.loads(raw or "{}")
        values = {
            name: entry["value"] for name, entry in printed.items() if not entry.get("sensitive")
        }
        sensitive = {name for name, entry in printed.items() if entry.get("sensitive")}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise TerraformError("terraform output -json did not print a JSON object") from None
    return values, sensitive


def _require_outputs(module_dir: Path, wanted: Sequence[str], present: Mapping[str, Any]) -> None:
    missing = [name for name in wanted if name not in present]
    if missing:
        raise TerraformError(
            f"module {module_dir.name} has no output {', '.join(missing)}; "
            f"it has: {', '.join(sorted(present)) or 'none'}"
        )


async def _lock_holders(conn: asyncpg.Connection, schema: str) -> list[LockHolder]:
    keys = [_CREATION_LOCK]
    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".states') is not None:
        state_id = await conn.fetchval(
            f'SELECT id FROM "{schema}".states WHERE name = $1', "default"
        )
        if state_id is not None:
            keys.insert(0, state_id)
    # pg_locks shows a single-bigint advisory key as classid (high half), objid (low half) and
    # objsubid 1.
    rows = await conn.fetch(
        """
        SELECT a.pid, a.application_name, a.backend_start, k.key
        FROM unnest($1::bigint[]) AS k(key)
        JOIN pg_locks l
          ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND l.classid = ((k.key >> 32) & 4294967295)::oid
         AND l.objid = (k.key & 4294967295)::oid
        JOIN pg_stat_activity a ON a.pid = l.pid
        ORDER BY k.key DESC, a.backend_start, a.pid
        """,
        keys,
    )
    return [
        LockHolder(
            pid=row["pid"],
            application_name=row["application_name"] or "",
            run_tag=_run_tag_of(row["application_name"] or ""),
            backend_start=row["backend_start"],
            key=row["key"],
        )
        for row in rows
    ]


def _run_tag_of(application_name: str) -> str | None:
    if application_name.startswith(_APPLICATION_PREFIX):
        return application_name[len(_APPLICATION_PREFIX) :] or None
    return None


@functools.cache
def _prctl() -> Any:
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _die_with_parent() -> Callable[[], None] | None:
    """A function for the child to run before exec: it gets SIGKILL when this process dies.

    Otherwise a killed worker would leave its terraform running, holding the state lock and
    changing resources that no one watches. (Linux sends the signal when the thread that started
    the child ends: here the event loop's thread.)
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return die_with_parent


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    """Send `signum` to the process's group: terraform and the provisioners it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _prepare_work_dir(module_dir: Path, work_dir: Path) -> str | None:
    """A fresh copy of the module in `work_dir`, with a pg backend unless it names its own."""
    if not module_dir.is_dir() or not any(module_dir.glob("*.tf")):
        raise TerraformError(f"no Terraform module at {module_dir}")
    _refuse_links_out(module_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        module_dir,
        work_dir,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.backup"),
    )
    for source in work_dir.glob("*.tf"):
        match = _BACKEND_BLOCK.search(source.read_text(errors="replace"))
        if match:
            return match.group(1)
    target = work_dir / _BACKEND_FILE
    if target.exists():
        target = work_dir / f"pao_{_BACKEND_FILE}"
    target.write_text('terraform {\n  backend "pg" {}\n}\n')
    return None


def _refuse_links_out(module_dir: Path) -> None:
    """Refuse a module with a symbolic link that resolves outside it: copying the module
    follows links, so one would bring in (and hand the module) files from anywhere."""
    root = module_dir.resolve()
    for current, dirs, files in os.walk(module_dir):
        for name in (*dirs, *files):
            path = Path(current) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                relative = path.relative_to(module_dir).as_posix()
                raise TerraformError(
                    f"module {module_dir.name}: {relative} is a symbolic link out of the module"
                )


def _fresh_private_dir(path: Path) -> None:
    """An empty folder at `path` only its owner can enter."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)


def _write_private(path: Path, content: str | bytes) -> None:
    """Write `content` to a new file only its owner can read."""
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
