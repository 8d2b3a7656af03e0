"""A PostgreSQL login per Terraform workspace, so that module code reaches only its own state.

Terraform's pg backend reads `PG_CONN_STR`, and so can a module's `local-exec` provisioners:
with PAO's own login they could read the event store and every other workspace's state. When the
state login may create roles, each workspace gets a role of its own (`pao_<schema>`) that may
only read and write its schema's `states` table (and draw ids from the backend's sequence). PAO
makes the schema, table, index and sequence itself, and tells the backend not to (the
`skip_*_creation` settings), so the role needs no CREATE privilege anywhere. Each run sets a new
random password that expires with the run's time limit: nothing is stored, and a password one
run's provisioners saw stops working at the next run or at that limit, whichever comes first.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from pao.shared.database_access import DatabaseAccess

log = structlog.get_logger("pao.fulfillment.state_logins")

Mode = Literal["auto", "on", "off"]
#: What the backend is told when PAO made its objects.
SKIP_CREATION = (
    "-backend-config=skip_schema_creation=true",
    "-backend-config=skip_table_creation=true",
    "-backend-config=skip_index_creation=true",
)


class StateLoginsUnavailable(Exception):
    """PAO_TERRAFORM_STATE_ROLES=on, but the state login may not create roles."""


def role_for(schema: str) -> str:
    """The workspace's role: at most 63 characters, as PostgreSQL names are."""
    return f"pao_{schema}"[:63]


def with_login(dsn: str, user: str, password: str) -> str:
    """`dsn` with another user and password."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class StateLogins:
    """Makes (once) and re-keys (each run) the login of a workspace's state schema."""

    def __init__(
        self, admin_dsn: str, *, mode: Mode = "auto", access: DatabaseAccess | None = None
    ) -> None:
        self._dsn = admin_dsn
        self._access = access or DatabaseAccess()
        self._mode = mode
        self._able: bool | None = None

    async def enabled(self) -> bool:
        """Whether runs get a login of their own (checked once)."""
        if self._mode == "off":
            return False
        if self._able is None:
            conn = await self._access.connect(self._dsn)
            try:
                row = await conn.fetchrow(
                    "SELECT rolsuper OR rolcreaterole AS able FROM pg_roles "
                    "WHERE rolname = current_user"
                )
            finally:
                await conn.close()
            self._able = bool(row and row["able"])
            if not self._able:
                if self._mode == "on":
                    raise StateLoginsUnavailable(
                        "PAO_TERRAFORM_STATE_ROLES=on, but the Terraform state login may not "
                        "create roles (grant it CREATEROLE, or set the setting to auto or off)"
                    )
                log.warning(
                    "terraform runs share the state login: it may not create a role per "
                    "workspace (grant CREATEROLE to isolate them)"
                )
        return self._able

    async def login(self, schema: str, *, valid_for: float) -> tuple[str, str]:
        """The workspace's role and a new password for it, valid for `valid_for` seconds; its
        schema, table, index and the backend's sequence exist afterwards."""
        role = role_for(schema)
        password = secrets.token_urlsafe(24)
        until = datetime.now(UTC) + timedelta(seconds=valid_for + 60)
        conn = await self._access.connect(self._dsn)
        try:
            async with conn.transaction():
                # Two runs of one workspace (two workers) would race to create the role.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", role)
                for statement in await conn.fetchval(
                    _STATEMENTS, role, password, until.isoformat(), schema
                ):
                    await conn.execute(statement)
        finally:
            await conn.close()
        return role, password


#: The statements that make and re-key a workspace's login, built with format() so that every
#: name and the password are quoted by PostgreSQL itself.
_STATEMENTS = """
WITH p (role, password, until, schema) AS (SELECT $1::text, $2::text, $3::text, $4::text)
SELECT ARRAY[
    CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p.role)
         THEN 'SELECT 1'
         ELSE format('CREATE ROLE %I NOINHERIT', p.role) END,
    format('ALTER ROLE %I LOGIN PASSWORD %L VALID UNTIL %L', p.role, p.password, p.until),
    format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), p.role),
    format('CREATE SCHEMA IF NOT EXISTS %I', p.schema),
    format('GRANT USAGE ON SCHEMA %I TO %I', p.schema, p.role),
    'CREATE SEQUENCE IF NOT EXISTS public.global_states_id_seq AS bigint',
    format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE public.global_states_id_seq TO %I', p.role),
    format('CREATE TABLE IF NOT EXISTS %I.states (id bigint NOT NULL DEFAULT '
           'nextval(''public.global_states_id_seq'') PRIMARY KEY, name text, data text)', p.schema),
    format('CREATE UNIQUE INDEX IF NOT EXISTS states_by_name ON %I.states (name)', p.schema),
    format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.states TO %I', p.schema, p.role)
] FROM p
"""
