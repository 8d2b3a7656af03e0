"""Where a catalog comes from: a local directory, or a git repository fetched into a cache.

A source also says where the catalog's own files are once fetched (its local Terraform modules
are read from there) and carries the module snapshotter that reads them and fetches git modules.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from pao.catalog.modules import CatalogFolder, ModuleSnapshots
from pao.spec.catalog import CatalogFile, read_directory

log = structlog.get_logger(__name__)


class SourceError(Exception):
    """The source could not be read; the message says what to check (never a secret)."""


@dataclass(frozen=True)
class Fetched:
    """What a source returned: the files and, for git, the commit they came from."""

    files: list[CatalogFile]
    revision: str | None
    #: where the catalog's files are, to read the modules its items name
    folder: CatalogFolder | None = None


class CatalogSource(Protocol):
    """Anything that can produce the catalog's files."""

    #: snapshots the Terraform modules the catalog's items name
    modules: ModuleSnapshots

    def describe(self) -> str: ...

    async def fetch(self) -> Fetched: ...


class DirectorySource:
    """A catalog directory on disk (the repository's `catalog/` by default)."""

    def __init__(self, root: Path, *, modules: ModuleSnapshots | None = None) -> None:
        self.root = root
        self.modules = modules or ModuleSnapshots()

    def describe(self) -> str:
        return f"dir:{self.root}"

    async def fetch(self) -> Fetched:
        if not self.root.is_dir():
            raise SourceError(f"catalog directory {self.root} does not exist")
        files = await asyncio.to_thread(read_directory, self.root)
        return Fetched(files, None, CatalogFolder(root=self.root))


class GitSource:
    """A git repository: URL, branch or tag, and the catalog's sub-path within it.

    Fetched with the `git` binary into a cache directory; an HTTPS token, when given, travels in
    an HTTP header set per command through git's environment, never in the URL, on a command
    line or on disk.
    """

    def __init__(
        self,
        url: str,
        *,
        ref: str = "main",
        subpath: str = "",
        cache_dir: Path,
        token: str | None = None,
        token_provider: Callable[[], Awaitable[str | None]] | None = None,
        modules: ModuleSnapshots | None = None,
    ) -> None:
        self.url = url
        self.ref = ref
        self.subpath = subpath.strip("/")
        self.cache_dir = cache_dir
        self._token = token
        self._token_provider = token_provider
        self._lock = asyncio.Lock()
        self.modules = modules or ModuleSnapshots()

    def describe(self) -> str:
        sub = f" ({self.subpath})" if self.subpath else ""
        return f"git:{self.url}@{self.ref}{sub}"

    async def _git(self, *args: str, cwd: Path | None = None, token: str | None = None) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        if token:
            # Through git's configuration variables, not `-c` (the process list shows every
            # command line to every user; a process's environment only to its owner).
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            env |= {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip().splitlines()
            raise SourceError(
                f"git {args[0]} failed for {self.describe()}: "
                f"{message[-1] if message else proc.returncode}"
            )
        return out.decode()

    async def fetch(self) -> Fetched:
        async with self._lock:
            repo = self.cache_dir
            if not (repo / ".git").exists():
                repo.mkdir(parents=True, exist_ok=True)
                await self._git("init", "--quiet", str(repo))
            token = self._token
            if token is None and self._token_provider is not None:
                token = await self._token_provider()
            await self._git(
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--force",
                self.url,
                self.ref,
                cwd=repo,
                token=token,
            )
            await self._git("checkout", "--quiet", "--force", "--detach", "FETCH_HEAD", cwd=repo)
            await self._git("clean", "--quiet", "-fdx", cwd=repo)
            revision = (await self._git("rev-parse", "HEAD", cwd=repo)).strip()
            root = repo / self.subpath if self.subpath else repo
            if not root.is_dir():
                raise SourceError(f"{self.subpath!r} is not a folder of {self.describe()}")
            files = await asyncio.to_thread(read_directory, root)
            log.info("catalog fetched", source=self.describe(), revision=revision, files=len(files))
            folder = CatalogFolder(
                root=root, repository=repo, commit=revision, subpath=self.subpath
            )
            return Fetched(files, revision, folder)
