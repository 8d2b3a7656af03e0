"""Terraform modules as the catalog published them, unpacked once on the worker's disk.

The catalog stores every module an item names as a tar archive in `terraform_modules`, named by
the archive's sha256 (`sha256:<hex>`), and an item's definition maps each module source to its
hash. A worker unpacks a snapshot once into `<root>/<hex>/` (the root is under the Terraform
runner's work root): the archive's hash is checked first, it is extracted into a temporary folder
and renamed into place, so a folder that exists is complete and holds exactly what was published.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_MODULE_HASH = re.compile(r"sha256:([0-9a-f]{64})")


class ModuleUnavailable(Exception):
    """A module snapshot cannot be used: missing, corrupt, or the database is away (transient)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


def hash_of(archive: bytes) -> str:
    """The name of a snapshot with this archive."""
    return "sha256:" + hashlib.sha256(archive).hexdigest()


class ModuleCache:
    """Module snapshots by hash, unpacked under `root` on first use."""

    def __init__(self, pool: asyncpg.Pool, root: Path) -> None:
        self._pool = pool
        self.root = root
        self._locks: dict[str, asyncio.Lock] = {}

    def folder_of(self, module_hash: str) -> Path:
        """Where the snapshot is (or will be) unpacked."""
        match = _MODULE_HASH.fullmatch(module_hash)
        if match is None:
            raise ModuleUnavailable(f"{module_hash!r} is not a module hash", transient=False)
        return self.root / match.group(1)

    async def materialise(self, module_hash: str) -> Path:
        """The folder holding the snapshot's files, unpacked from the database if not yet."""
        target = self.folder_of(module_hash)
        if target.is_dir():
            return target
        lock = self._locks.setdefault(module_hash, asyncio.Lock())
        async with lock:
            if target.is_dir():
                return target
            try:
                archive = await self._pool.fetchval(
                    "SELECT archive FROM terraform_modules WHERE module_hash = $1", module_hash
                )
            except (asyncpg.PostgresError, OSError) as exc:
                raise ModuleUnavailable(
                    f"the module snapshot {module_hash} cannot be read now: {exc}", transient=True
                ) from exc
            if archive is None:
                raise ModuleUnavailable(
                    f"the module snapshot {module_hash} is not stored", transient=False
                )
            actual = hash_of(archive)
            if actual != module_hash:
                raise ModuleUnavailable(
                    f"the stored module snapshot {module_hash} is corrupt: its archive hashes "
                    f"to {actual}; refusing to run it",
                    transient=False,
                )
            try:
                files = await asyncio.to_thread(_unpack, archive, target)
            except (OSError, tarfile.TarError, ValueError) as exc:
                raise ModuleUnavailable(
                    f"the module snapshot {module_hash} cannot be unpacked: {exc}",
                    transient=isinstance(exc, OSError),
                ) from exc
        self._locks.pop(module_hash, None)
        log.info("module snapshot unpacked", module_hash=module_hash, files=files, folder=target)
        return target


def _unpack(archive: bytes, target: Path) -> int:
    """Extract regular files only, each inside the folder, then move the folder into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    temporary.mkdir()
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if not member.isreg():
                    raise ValueError(f"{member.name} is not a regular file")
                if name.is_absolute() or ".." in name.parts or not name.parts:
                    raise ValueError(f"{member.name} points outside the module")
                source = tar.extractfile(member)
                assert source is not None
                path = temporary.joinpath(*name.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(source.read())
                path.chmod(0o755 if member.mode & 0o100 else 0o644)
                count += 1
        try:
            os.rename(temporary, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(temporary, ignore_errors=True)  # another worker unpacked it first
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return count
