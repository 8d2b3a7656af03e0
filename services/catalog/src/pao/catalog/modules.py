"""Snapshots of the Terraform modules catalog items name, stored once by content hash.

When the catalog publishes an item, every module its actions and teardown actions name is packed
into a deterministic tar (files in name order, no times, owners or groups; `.terraform` folders
and state files left out), named by the archive's sha256 (`sha256:<hex>`) and stored once in
`terraform_modules`. The item's event maps each module source to that hash, so fulfilment runs
the content published with the definition a request pinned, not whatever the catalog holds now.

A local module (`modules/...`) is read from the catalog's own files, at the revision the refresh
read for a git catalog. A git module (`git::https://host/repo.git//sub/path?ref=v1.2.0`, or
`git::file:///...`) is fetched with `git` into a bare repository of a cache folder, at a tag
(resolved to its commit, which is recorded) or a full 40-character commit id; a branch is refused,
since what it names moves.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import structlog

from pao.spec.problems import Problem, pointer

log = structlog.get_logger(__name__)

#: Folders a snapshot leaves out wherever they are (Terraform's working data, git's own).
EXCLUDED_DIRS = frozenset({".terraform", ".git"})
#: File names a snapshot leaves out (state and its backups and locks).
EXCLUDED_FILES = ("*.tfstate*",)
#: Bounds of one module: a snapshot is kept in the database and unpacked by every worker.
MAX_FILES = 5_000
MAX_BYTES = 32 * 1024 * 1024
GIT_TIMEOUT = 300.0

_COMMIT_ID = re.compile(r"[0-9a-fA-F]{40}")
_SHORT_ID = re.compile(r"[0-9a-fA-F]{4,39}")
_REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+/-]*")
#: one commit, without its history or other tags
_FETCH = ("fetch", "--quiet", "--depth", "1", "--no-tags")


class ModuleError(Exception):
    """A module cannot be snapshotted; the message says why, for the catalog's refresh report."""


def module_hash_of(archive: bytes) -> str:
    """A snapshot's name: the sha256 of its archive."""
    return "sha256:" + hashlib.sha256(archive).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One file of a module: its path within the module (POSIX), content, executable bit."""

    path: str
    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class ModuleArchive:
    """A module's snapshot: the archive, its hash, and where it came from."""

    module_hash: str
    archive: bytes
    files: int
    size: int
    source: str
    #: the commit it was read at (git), None for a catalog folder on disk
    revision: str | None = None


@dataclass(frozen=True)
class CatalogFolder:
    """Where a fetched catalog's own files are: a folder on disk, or a commit of a repository
    (with the catalog's sub-path in it), which a refresh reads its local modules from."""

    root: Path | None = None
    repository: Path | None = None
    commit: str | None = None
    subpath: str = ""


def excluded(path: PurePosixPath) -> bool:
    """Whether a snapshot leaves this path (relative to the module) out."""
    if any(part in EXCLUDED_DIRS for part in path.parts[:-1]):
        return True
    return path.name in EXCLUDED_DIRS or any(fnmatch(path.name, p) for p in EXCLUDED_FILES)


def pack(entries: Iterable[Entry], *, source: str, revision: str | None = None) -> ModuleArchive:
    """The deterministic archive of a module's files: the same files give the same hash."""
    chosen = sorted(
        (e for e in entries if not excluded(PurePosixPath(e.path))), key=lambda e: e.path
    )
    for entry in chosen:
        name = PurePosixPath(entry.path)
        if name.is_absolute() or ".." in name.parts or not name.parts:
            raise ModuleError(f"{entry.path} points outside the module")
    if not chosen:
        raise ModuleError("the module holds no files")
    if not any("/" not in e.path and e.path.endswith((".tf", ".tf.json")) for e in chosen):
        raise ModuleError("the module holds no Terraform file (*.tf) at its top level")
    size = sum(len(e.data) for e in chosen)
    if len(chosen) > MAX_FILES or size > MAX_BYTES:
        raise ModuleError(
            f"the module is too large to snapshot ({len(chosen)} files, {size} bytes; "
            f"at most {MAX_FILES} files and {MAX_BYTES} bytes)"
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in chosen:
            info = tarfile.TarInfo(entry.path)
            info.type = tarfile.REGTYPE
            info.size = len(entry.data)
            info.mode = 0o755 if entry.executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(entry.data))
    archive = buffer.getvalue()
    return ModuleArchive(module_hash_of(archive), archive, len(chosen), size, source, revision)


def read_folder(folder: Path) -> list[Entry]:
    """A module folder's files; a symbolic link is refused (a snapshot holds files only)."""
    entries: list[Entry] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
        here = Path(current)
        for name in sorted(files + [d for d in dirs if (here / d).is_symlink()]):
            path = here / name
            relative = path.relative_to(folder).as_posix()
            if excluded(PurePosixPath(relative)):
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise ModuleError(f"{relative} is a symbolic link; a module snapshot holds files")
            if not stat.S_ISREG(info.st_mode):
                continue
            entries.append(Entry(relative, path.read_bytes(), bool(info.st_mode & stat.S_IXUSR)))
    return entries


async def _git(
    *args: str, cwd: Path | None = None, stdin: bytes | None = None, what: str = ""
) -> bytes:
    """Run git; a failure is a ModuleError with git's last line."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    command = " ".join(filter(None, ("git", next(a for a in args if not a.startswith("-")), what)))
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), GIT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ModuleError(f"{command} took longer than {GIT_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ModuleError(f"{command} failed: {lines[-1] if lines else proc.returncode}")
    return out


async def read_git_tree(repository: Path, commit: str, path: str) -> list[Entry]:
    """The files under `path` (the whole tree when empty) at `commit`, relative to `path`."""
    path = path.strip("/")
    listing = await _git(
        "--literal-pathspecs",
        "ls-tree",
        "-r",
        "-l",
        "-z",
        "--full-tree",
        commit,
        *(["--", path] if path else []),
        cwd=repository,
        what=f"of {commit[:12]}",
    )
    prefix = f"{path}/" if path else ""
    found: list[tuple[str, str, bool]] = []
    total = 0
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, name_bytes = record.partition(b"\t")
        mode, kind, oid, size = meta.decode().split()
        name = name_bytes.decode("utf-8", errors="surrogateescape")
        if not name.startswith(prefix):
            continue
        relative = name[len(prefix) :]
        if excluded(PurePosixPath(relative)):
            continue
        if mode == "120000":
            raise ModuleError(f"{relative} is a symbolic link; a module snapshot holds files")
        if kind != "blob":
            raise ModuleError(f"{relative} is a git submodule; a module snapshot holds files")
        total += int(size)
        if total > MAX_BYTES or len(found) >= MAX_FILES:
            raise ModuleError(
                f"the module is too large to snapshot (at most {MAX_FILES} files and "
                f"{MAX_BYTES} bytes)"
            )
        found.append((relative, oid, mode == "100755"))
    if not found:
        return []
    batch = await _git(
        "cat-file",
        "--batch",
        cwd=repository,
        stdin="".join(f"{oid}\n" for _, oid, _ in found).encode(),
        what=f"of {commit[:12]}",
    )
    entries: list[Entry] = []
    offset = 0
    for relative, _, executable in found:
        header_end = batch.index(b"\n", offset)
        _, _, size = batch[offset:header_end].decode().split()
        start = header_end + 1
        end = start + int(size)
        entries.append(Entry(relative, batch[start:end], executable))
        offset = end + 1  # the newline after each object
    return entries


@dataclass(frozen=True)
class GitModule:
    """A git module source: the repository URL, the folder within it and the ref it pins."""

    url: str
    subpath: str
    ref: str | None


def parse_git_source(source: str) -> GitModule:
    """`git::<url>[//<sub/path>][?ref=<tag or commit>]`, as Terraform writes git sources."""
    if not source.startswith("git::"):
        raise ModuleError("not a git module source (git::https://...)")
    if "{{" in source or "{%" in source:
        raise ModuleError("a module source is not a template; name the module itself")
    rest = source.removeprefix("git::")
    rest, _, query = rest.partition("?")
    scheme, sep, remainder = rest.partition("://")
    if not sep or scheme not in ("https", "file"):
        raise ModuleError("only git::https:// and git::file:// module sources are supported")
    location, sep, subpath = remainder.partition("//")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in params:
            raise ModuleError(f"the source names {key!r} twice")
        params[key] = value
    unknown = sorted(set(params) - {"ref"})
    if unknown:
        raise ModuleError(f"unsupported source parameter(s): {', '.join(unknown)} (only ref)")
    subpath = subpath.strip("/")
    if subpath and (".." in PurePosixPath(subpath).parts):
        raise ModuleError("the module's sub-path may not leave the repository (..)")
    return GitModule(url=f"{scheme}://{location}", subpath=subpath, ref=params.get("ref") or None)


@dataclass
class ItemModules:
    """What a refresh snapshotted: each item's modules, the archives, and what was refused."""

    modules: dict[str, dict[str, str]] = field(default_factory=dict)
    archives: dict[str, ModuleArchive] = field(default_factory=dict)
    #: item id and the problem (pointer relative to the item's file)
    problems: list[tuple[str, Problem]] = field(default_factory=list)


def terraform_actions(item: Mapping[str, Any]) -> Iterator[tuple[tuple[object, ...], dict]]:
    """Every Terraform action of an item (its actions, then its teardown), with its location."""
    for index, action in enumerate((item.get("fulfillment") or {}).get("actions") or []):
        if action.get("type") == "terraform" and "terraform" in action:
            yield ("fulfillment", "actions", index), action
    for index, action in enumerate((item.get("lifecycle") or {}).get("teardown") or []):
        if action.get("type") == "terraform" and "terraform" in action:
            yield ("lifecycle", "teardown", index), action


class ModuleSnapshots:
    """Takes the snapshots of a catalog's modules; git modules are fetched into `cache_dir`.

    `allowed_hosts`, when given, are the only hosts git modules may come from (`file` allows
    `git::file://` sources); by default any host is allowed.
    """

    def __init__(
        self, cache_dir: Path | None = None, *, allowed_hosts: Collection[str] | None = None
    ) -> None:
        self.cache_dir = cache_dir
        self.allowed_hosts = frozenset(allowed_hosts) if allowed_hosts is not None else None
        self._lock = asyncio.Lock()

    async def of_items(
        self, items: Mapping[str, Mapping[str, Any]], folder: CatalogFolder | None
    ) -> ItemModules:
        """Snapshot every module the items name (each source once)."""
        taken = ItemModules()
        done: dict[str, ModuleArchive | ModuleError] = {}
        for item_id, item in items.items():
            modules: dict[str, str] = {}
            for where, action in terraform_actions(item):
                source = action["terraform"]["module"]
                if source not in done:
                    try:
                        done[source] = await self.snapshot(source, folder)
                    except ModuleError as exc:
                        done[source] = exc
                outcome = done[source]
                if isinstance(outcome, ModuleError):
                    message = f"item {item_id}, action {action['name']}: module {source}: {outcome}"
                    taken.problems.append(
                        (
                            item_id,
                            Problem("module", message, pointer(*where, "terraform", "module")),
                        )
                    )
                    continue
                modules[source] = outcome.module_hash
                taken.archives[outcome.module_hash] = outcome
            taken.modules[item_id] = modules
        return taken

    async def snapshot(self, source: str, folder: CatalogFolder | None) -> ModuleArchive:
        """The snapshot of one module source."""
        if source.startswith("git::"):
            return await self.git(source)
        return await self.local(source, folder)

    async def local(self, path: str, folder: CatalogFolder | None) -> ModuleArchive:
        """A module folder of the catalog itself (`modules/...`)."""
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ModuleError("a module path stays inside the catalog (no .., not absolute)")
        if folder is not None and folder.repository is not None and folder.commit is not None:
            inside = "/".join(p for p in (folder.subpath.strip("/"), relative.as_posix()) if p)
            entries = await read_git_tree(folder.repository, folder.commit, inside)
            if not entries:
                raise ModuleError(f"the catalog has no folder {path} at {folder.commit[:12]}")
            return pack(entries, source=path, revision=folder.commit)
        if folder is None or folder.root is None:
            raise ModuleError("this catalog source has no files to read modules from")
        target = folder.root / relative
        if not target.resolve().is_relative_to(folder.root.resolve()):
            raise ModuleError(f"{path} is a symbolic link out of the catalog")
        if not target.is_dir():
            raise ModuleError(f"the catalog has no folder {path}")
        try:
            entries = await asyncio.to_thread(read_folder, target)
        except OSError as exc:
            raise ModuleError(f"the module cannot be read: {exc}") from exc
        return pack(entries, source=path)

    async def git(self, source: str) -> ModuleArchive:
        """A git module at a tag or commit id, fetched into the cache when not already there."""
        module = parse_git_source(source)
        if module.ref is None:
            raise ModuleError(
                "the source names no ref; pin a tag or a full commit id (...?ref=v1.2.0)"
            )
        if not _REF_NAME.fullmatch(module.ref) or ".." in module.ref:
            raise ModuleError(f"{module.ref!r} is not a tag name or a commit id")
        host = urlsplit(module.url).hostname or module.url.partition("://")[0]
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            raise ModuleError(
                f"git modules may not come from {host} (allowed: "
                f"{', '.join(sorted(self.allowed_hosts)) or 'none'})"
            )
        if self.cache_dir is None:
            raise ModuleError("no cache folder is configured for git modules")
        async with self._lock:
            repository = await self._repository(module.url)
            commit = await self._resolve(repository, module)
            entries = await read_git_tree(repository, commit, module.subpath)
        if not entries:
            where = f"folder {module.subpath}" if module.subpath else "file"
            raise ModuleError(f"{module.url} has no {where} at {module.ref} ({commit[:12]})")
        archive = pack(entries, source=source, revision=commit)
        log.info(
            "git module snapshotted",
            source=source,
            commit=commit,
            module_hash=archive.module_hash,
            files=archive.files,
        )
        return archive

    async def _repository(self, url: str) -> Path:
        assert self.cache_dir is not None
        repository = self.cache_dir / hashlib.sha256(url.encode()).hexdigest()[:24]
        if not (repository / "HEAD").exists():
            repository.mkdir(parents=True, exist_ok=True)
            await _git("init", "--quiet", "--bare", str(repository), what=f"of {url}")
        return repository

    async def _has(self, repository: Path, commit: str) -> bool:
        try:
            await _git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repository)
        except ModuleError:
            return False
        return True

    async def _local_ref(self, repository: Path, ref: str) -> str | None:
        try:
            out = await _git(
                "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repository
            )
        except ModuleError:
            return None
        return out.decode().strip() or None

    async def _resolve(self, repository: Path, module: GitModule) -> str:
        """The commit the module's ref names, fetched into the repository."""
        ref, url = module.ref or "", module.url
        if _COMMIT_ID.fullmatch(ref):
            commit = ref.lower()
            if not await self._has(repository, commit):
                try:
                    await _git(*_FETCH, url, commit, cwd=repository, what=f"of {url}")
                except ModuleError as exc:
                    raise ModuleError(f"commit {commit} cannot be fetched: {exc}") from exc
                if not await self._has(repository, commit):
                    raise ModuleError(f"{url} has no commit {commit}")
            await _git("update-ref", f"refs/pao/commits/{commit}", commit, cwd=repository)
            return commit
        tag, branch = f"refs/tags/{ref}", f"refs/heads/{ref}"
        try:
            listing = await _git(
                "ls-remote", url, tag, f"{tag}^{{}}", branch, cwd=repository, what=f"of {url}"
            )
        except ModuleError as exc:
            known = await self._local_ref(repository, tag)
            if known is None:
                raise ModuleError(f"{url} cannot be read: {exc}") from exc
            log.warning(
                "git module source unreachable; using the tag as last fetched",
                url=url,
                tag=ref,
                commit=known,
                error=str(exc),
            )
            return known
        refs = {}
        for line in listing.decode().splitlines():
            oid, _, name = line.partition("\t")
            refs[name.strip()] = oid.strip()
        named = refs.get(f"{tag}^{{}}") or refs.get(tag)
        if named is None:
            if branch in refs:
                raise ModuleError(
                    f"ref {ref!r} is a branch of {url}; a branch moves, so pin a tag or a full "
                    "40-character commit id"
                )
            hint = (
                "; a commit is named by its full 40-character id"
                if _SHORT_ID.fullmatch(ref)
                else ""
            )
            raise ModuleError(f"{url} has no tag {ref!r}{hint}")
        if await self._has(repository, named):
            await _git("update-ref", tag, named, cwd=repository)
            return named
        await _git(*_FETCH, "--force", url, f"+{tag}:{tag}", cwd=repository, what=f"of {url}")
        commit = await self._local_ref(repository, tag)
        if commit is None:
            raise ModuleError(f"tag {ref!r} of {url} does not name a commit")
        return commit


async def store_archives(conn: asyncpg.Connection, archives: Iterable[ModuleArchive]) -> int:
    """Store the snapshots not stored yet (inside the caller's transaction); how many were new."""
    wanted = {a.module_hash: a for a in archives}
    if not wanted:
        return 0
    present = {
        row["module_hash"]
        for row in await conn.fetch(
            "SELECT module_hash FROM terraform_modules WHERE module_hash = ANY($1::text[])",
            list(wanted),
        )
    }
    missing = [a for h, a in wanted.items() if h not in present]
    for archive in missing:
        await conn.execute(
            "INSERT INTO terraform_modules (module_hash, archive, files, bytes, source, revision) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (module_hash) DO NOTHING",
            archive.module_hash,
            archive.archive,
            archive.files,
            archive.size,
            archive.source,
            archive.revision,
        )
    return len(missing)
