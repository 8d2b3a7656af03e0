"""Runs Terraform modules with their state in PostgreSQL (Terraform's built-in `pg` backend)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_VAR_FILE = "pao-run.tfvars.json"
_EMPTY_STATE_FILE = "pao-empty-state.json"
_BACKEND_FILE = "backend.tf"
_BACKEND_BLOCK = re.compile(r'^\s*backend\s+"([A-Za-z0-9_-]+)"', re.MULTILINE)
_MIN_REDACTED_LENGTH = 4
_MESSAGE_LINES = 20

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


class TerraformError(Exception):
    """A Terraform run that failed; `transient` says whether running it again may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


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


def backend_conn_str(dsn: str) -> str:
    """The DSN for the pg backend, which insists on TLS unless told otherwise."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "sslmode" for name, _ in query):
        query.append(("sslmode", "disable"))
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
    """Applies Terraform modules, one run at a time per workspace, state in PostgreSQL."""

    def __init__(
        self,
        *,
        work_root: Path,
        state_dsn: str,
        binary: str = "terraform",
        timeout: float = 1800,
        lock_timeout: float = 60,
    ) -> None:
        self.work_root = work_root
        self.binary = binary
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self._state_dsn = state_dsn
        self._conn_str = backend_conn_str(state_dsn)
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
            return await self._apply(module_dir, dict(variables), workspace, slug, outputs)

    async def _apply(
        self,
        module_dir: Path,
        variables: dict[str, Any],
        workspace: str,
        slug: str,
        outputs: Sequence[str],
    ) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        secrets = _secrets_in(variables, self._state_dsn)
        work_dir = self.work_root / slug
        backend = await asyncio.to_thread(_prepare_work_dir, module_dir, work_dir)
        state_in_postgres = backend in (None, "pg")
        init = ["init", "-input=false", "-no-color"]
        if state_in_postgres:
            init.append(f"-backend-config=schema_name={schema_for(workspace)}")
        await self._init(init, work_dir, deadline, secrets)
        if state_in_postgres:
            await self._ensure_state(work_dir, deadline, secrets)
        var_file = work_dir / _VAR_FILE
        try:
            _write_private(var_file, json.dumps(variables, indent=2, default=str))
            await self._run(
                [
                    "apply",
                    "-input=false",
                    "-no-color",
                    "-auto-approve",
                    f"-lock-timeout={self.lock_timeout:.0f}s",
                    f"-var-file={_VAR_FILE}",
                ],
                work_dir,
                deadline,
                secrets,
            )
        finally:
            var_file.unlink(missing_ok=True)
        raw = await self._run(["output", "-no-color", "-json"], work_dir, deadline, secrets)
        try:
            values = {name: entry["value"] for name, entry in json.loads(raw or "{}").items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            raise TerraformError("terraform output -json did not print a JSON object") from None
        if not outputs:
            return values
        missing = [name for name in outputs if name not in values]
        if missing:
            raise TerraformError(
                f"module {module_dir.name} has no output {', '.join(missing)}; "
                f"it has: {', '.join(sorted(values)) or 'none'}"
            )
        return {name: values[name] for name in outputs}

    async def _init(
        self, args: list[str], work_dir: Path, deadline: float, secrets: Sequence[str]
    ) -> None:
        # The pg backend creates a sequence shared by every schema on its first init in a
        # database; two first inits at once collide. Later inits find it and run in parallel.
        if self._backend_ready:
            await self._run(args, work_dir, deadline, secrets, _INIT_RACES)
            return
        async with self._first_init:
            await self._run(args, work_dir, deadline, secrets, _INIT_RACES)
            self._backend_ready = True

    async def _ensure_state(self, work_dir: Path, deadline: float, secrets: Sequence[str]) -> None:
        """Store an empty state for a new workspace before its first apply.

        The pg backend takes one database-wide lock while it creates a workspace's state and holds
        it until that run ends; a first apply would block every other workspace for its whole
        duration. Creating the state first holds that lock only for a moment.
        """
        state = await self._pull_state(work_dir, deadline, secrets)
        if state.get("lineage"):
            return
        state.update(serial=0, lineage=str(uuid.uuid4()))
        empty = work_dir / _EMPTY_STATE_FILE
        empty.write_text(json.dumps(state))
        try:
            await self._run(
                ["state", "push", f"-lock-timeout={self.lock_timeout:.0f}s", empty.name],
                work_dir,
                deadline,
                secrets,
            )
        except TerraformError:
            # Another worker may have created the state meanwhile, which is just as good.
            if not (await self._pull_state(work_dir, deadline, secrets)).get("lineage"):
                raise
        finally:
            empty.unlink(missing_ok=True)

    async def _pull_state(
        self, work_dir: Path, deadline: float, secrets: Sequence[str]
    ) -> dict[str, Any]:
        """The workspace's stored state; without a lineage when none is stored yet."""
        pulled = await self._run(["state", "pull"], work_dir, deadline, secrets)
        try:
            state = json.loads(pulled) if pulled.strip() else {}
        except ValueError:
            raise TerraformError("terraform state pull did not print a JSON state") from None
        if not isinstance(state, dict):
            raise TerraformError("terraform state pull did not print a JSON state")
        state.setdefault("version", 4)
        return state

    async def _run(
        self,
        args: list[str],
        work_dir: Path,
        deadline: float,
        secrets: Sequence[str],
        also_transient: Sequence[str] = (),
    ) -> str:
        """Run one terraform command in `work_dir`; its stdout, or TerraformError."""
        command = f"terraform {args[0]}"
        env = {
            **os.environ,
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            # Through the environment rather than -backend-config, so the connection string
            # (which may hold a password) is neither on a command line nor saved in .terraform/.
            "PG_CONN_STR": self._conn_str,
        }
        try:
            process = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                cwd=work_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills provisioners
            )
        except FileNotFoundError:
            raise TerraformError(f"the terraform binary {self.binary!r} was not found") from None
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            raise TerraformError(
                f"{command} did not finish within {self.timeout:.0f} s", transient=True
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if process.returncode != 0:
            text = stderr.decode(errors="replace")
            lowered = text.lower()
            transient = any(m in lowered for m in (*_TRANSIENT_MARKERS, *also_transient))
            detail = "\n".join(_meaningful_lines(text)) or f"exit status {process.returncode}"
            raise TerraformError(
                f"{command} failed: {_redact(detail, secrets)}", transient=transient
            )
        return stdout.decode(errors="replace")


def _prepare_work_dir(module_dir: Path, work_dir: Path) -> str | None:
    """A fresh copy of the module in `work_dir`, with a pg backend unless it names its own."""
    if not module_dir.is_dir() or not any(module_dir.glob("*.tf")):
        raise TerraformError(f"no Terraform module at {module_dir}")
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


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a new file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
