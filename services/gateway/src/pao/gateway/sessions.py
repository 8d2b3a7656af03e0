"""PAO session keys, bought by signing in with AWS credentials (`pao.gateway.signin`).

A session key is a SigV4 access key pair like a static one. Its secret is derived from the
installation's session key (HMAC of the key id), so the gateway recomputes it to verify a call
and no secret is stored anywhere: `auth_sessions` holds only who signed in and until when.
Every gateway of an installation shares the session key file, so any of them verifies any
session; without the file the sessions cannot be verified (and cannot be forged).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from pao.shared.keystore import Identity, KeyEntry
from pao.shared.settings import Settings

log = structlog.get_logger("pao.gateway.sessions")

#: Session key ids start so; a static key of the key store with the same id wins.
PREFIX = "PAOS"
_ALPHABET = string.ascii_uppercase + string.digits
_KEY_BYTES = 32
#: Verified sessions kept in memory: a signed-in caller's calls skip the database.
_CACHE_SIZE = 10_000


class SessionKeyFileError(Exception):
    """The session key file cannot be read or made."""


def load_or_create_key(path: Path) -> bytes:
    """The installation's session key; made (0600, 32 random bytes) the first time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SessionKeyFileError(f"{path}: cannot make the session key: {exc}") from exc
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(_KEY_BYTES))
        log.info("session key made", path=str(path))
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise SessionKeyFileError(f"{path}: cannot read the session key: {exc}") from exc
    if len(key) < _KEY_BYTES:
        raise SessionKeyFileError(
            f"{path}: the session key is {len(key)} bytes; it needs {_KEY_BYTES} random bytes "
            "(delete the file to have a new one made, which ends every session)"
        )
    return key


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in caller: who, and until when."""

    identity: Identity
    expires_at: datetime


class SessionKeys:
    """Mints session keys and finds the session behind one."""

    def __init__(self, key: bytes | Path, pool: asyncpg.Pool, *, ttl: timedelta) -> None:
        self._key_source = key
        self._loaded: bytes | None = key if isinstance(key, bytes) else None
        self._pool = pool
        self._ttl = ttl
        self._cache: OrderedDict[str, Session] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool) -> SessionKeys:
        path = settings.session_key_file or settings.data_dir / "session-signing.key"
        return cls(path, pool, ttl=timedelta(seconds=settings.session_ttl_seconds))

    @property
    def _key(self) -> bytes:
        """The session key, read (or made) when a session is first minted or checked."""
        if self._loaded is None:
            assert isinstance(self._key_source, Path)
            self._loaded = load_or_create_key(self._key_source)
        return self._loaded

    @property
    def signing_key(self) -> bytes:
        """The installation's key, for other derivations (each with a label of its own)."""
        return self._key

    def load(self) -> None:
        """Read (or make) the session key now: a server checks it at start, not at a sign-in."""
        _ = self._key

    @staticmethod
    def is_session_key(access_key_id: str) -> bool:
        return access_key_id.startswith(PREFIX) and len(access_key_id) == 20

    def secret_of(self, access_key_id: str) -> str:
        """The secret that belongs to a session key id (whether or not it was ever minted)."""
        digest = hmac.new(self._key, b"pao-session\0" + access_key_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")

    def verifier_entry(self, access_key_id: str) -> KeyEntry:
        """A key store entry to check a signature made with the session key; its identity is
        a placeholder, the session's own comes from `find`."""
        return KeyEntry(
            access_key_id=access_key_id,
            secret_access_key=self.secret_of(access_key_id),
            user="session",
        )

    async def mint(self, identity: Identity) -> tuple[str, str, datetime]:
        """A new session for `identity`: its key id, secret and expiry."""
        access_key_id = PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(16))
        expires_at = datetime.now(UTC) + self._ttl
        principal = identity.principal_arn or ""
        stored = identity.model_copy(update={"access_key_id": access_key_id})
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM auth_sessions WHERE expires_at < now() - interval '1 day'"
            )
            await conn.execute(
                "INSERT INTO auth_sessions (access_key_id, identity, principal_arn, expires_at) "
                "VALUES ($1, $2, $3, $4)",
                access_key_id,
                stored.model_dump(mode="json"),
                principal,
                expires_at,
            )
        return access_key_id, self.secret_of(access_key_id), expires_at

    async def find(self, access_key_id: str) -> Session | None:
        """The session a key id was minted for, expired or not; None if it never was."""
        cached = self._cache.get(access_key_id)
        if cached is not None:
            self._cache.move_to_end(access_key_id)
            return cached
        row = await self._pool.fetchrow(
            "SELECT identity, expires_at FROM auth_sessions WHERE access_key_id = $1",
            access_key_id,
        )
        if row is None:
            return None
        session = Session(Identity.model_validate(row["identity"]), row["expires_at"])
        self._cache[access_key_id] = session
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return session

    async def first_use_of_proof(self, signature: str, until: datetime) -> bool:
        """Remember a sign-in proof; False when it was seen before (a replay)."""
        digest = hashlib.sha256(signature.encode()).hexdigest()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM auth_signin_proofs WHERE expires_at < now()")
            inserted = await conn.fetchval(
                "INSERT INTO auth_signin_proofs (digest, expires_at) VALUES ($1, $2) "
                "ON CONFLICT (digest) DO NOTHING RETURNING true",
                digest,
                until,
            )
        return bool(inserted)
