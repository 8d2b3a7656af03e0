"""PostgreSQL connections (asyncpg) and the migration runner."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import asyncpg
import orjson
import structlog

from pao.shared.database_access import DatabaseAccess

log = structlog.get_logger(__name__)

#: Packages holding `NNNN_name.sql` migrations, applied in this order.
MIGRATION_PACKAGES: tuple[str, ...] = ("pao.shared.migrations",)

# Any constant works; it only has to be the same for every migrator.
_MIGRATION_LOCK = 0x5A0_0001


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson: event payloads are decoded on every read, and the standard library's json is
    # several times slower at it.
    for kind in ("jsonb", "json"):
        await conn.set_type_codec(
            kind, encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
        )


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """A released connection goes back as it is: asyncpg has rolled back a transaction left open
    and dropped its listeners, and PAO keeps no other session state on pooled connections (every
    SET is SET LOCAL, advisory locks are transaction locks, LISTEN has its own connection). The
    one exception, a leader's session (`pao.shared.lifecycle.leadership`), is closed instead of
    being released. This spares every release asyncpg's default reset, a round trip of
    `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    application_name: str = "pao",
    idle_in_transaction_timeout_ms: int = 0,
    access: DatabaseAccess | None = None,
) -> asyncpg.Pool:
    """A connection pool with JSON codecs installed, named in pg_stat_activity.

    With `idle_in_transaction_timeout_ms`, PostgreSQL ends a session that sits inside a
    transaction that long, so a frozen process cannot hold locks (an advisory lock, a partition
    claim) for ever. Every connection it opens, now or after the database came back, gets
    `access`'s TLS context and password (an IAM token made for that connection).
    """
    access = access or DatabaseAccess()
    server_settings = {"application_name": application_name}
    if idle_in_transaction_timeout_ms:
        server_settings["idle_in_transaction_session_timeout"] = str(idle_in_transaction_timeout_ms)
    pool = await asyncpg.create_pool(
        dsn,
        connect=access.connect,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_nothing_to_reset,
        command_timeout=60,
        server_settings=server_settings,
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file, identified by its package and file name."""

    package: str
    name: str
    sql: str

    @property
    def key(self) -> str:
        return f"{self.package}:{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations(packages: Iterable[str] = MIGRATION_PACKAGES) -> list[Migration]:
    """Every migration of the given packages, in package order then file-name order."""
    found: list[Migration] = []
    for package in packages:
        files = sorted(
            (f for f in resources.files(package).iterdir() if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )
        found.extend(Migration(package, f.name, f.read_text(encoding="utf-8")) for f in files)
    return found


async def migrate(
    dsn: str, packages: Iterable[str] = MIGRATION_PACKAGES, *, access: DatabaseAccess | None = None
) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the keys applied."""
    conn = await (access or DatabaseAccess()).connect(dsn)
    applied_now: list[str] = []
    try:
        # Two processes migrating at once would race; the advisory lock makes them take turns.
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   key text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["key"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
        }
        for migration in discover_migrations(packages):
            if migration.key in done:
                if done[migration.key] != migration.checksum:
                    log.warning("migration changed after it was applied", migration=migration.key)
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (key, checksum) VALUES ($1, $2)",
                    migration.key,
                    migration.checksum,
                )
            applied_now.append(migration.key)
            log.info("migration applied", migration=migration.key)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied_now
