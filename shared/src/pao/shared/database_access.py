"""How PAO reaches PostgreSQL: TLS with certificate verification, and RDS IAM login tokens.

Every connection PAO makes to its database (the pools, the LISTEN connection of log streams, the
migrator, Terraform's state) takes its TLS context and password from one `DatabaseAccess`, built
from the settings for one DSN. Nothing here pins an address: asyncpg resolves the DSN's host name
on each new connection, so after an Aurora failover (the writer endpoint's DNS moving to the
promoted instance) a reconnect reaches the new writer, with the same TLS checks and a fresh
token.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from pao.shared.settings import TLS_SSL_MODES, Settings

#: An RDS token is accepted for 15 minutes after it was made; PAO makes a new one after 10, so a
#: connection opened just before renewal still has minutes to spare.
TOKEN_RENEW_SECONDS = 600.0
DEFAULT_PORT = 5432


class DatabaseSettingsError(ValueError):
    """A database DSN does not fit the TLS or IAM settings."""


class DatabaseTLSError(ConnectionError):
    """PostgreSQL's certificate failed verification (a ConnectionError: the database is
    unreachable as configured, and callers that ride out outages keep trying)."""


class RdsAuthToken:
    """The IAM token a login presents as its password, made again after `renew_after` seconds.

    asyncpg calls it for each new connection (a callable password), so a pool that opens a
    connection hours after it started presents a token that is minutes old.
    """

    def __init__(
        self,
        generate: Callable[[], str],
        *,
        renew_after: float = TOKEN_RENEW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._generate = generate
        self._renew_after = renew_after
        self._clock = clock
        self._token: str | None = None
        self._made_at = 0.0
        self._lock: asyncio.Lock | None = None

    async def __call__(self) -> str:
        """The current token, made anew when it is older than the renewal interval."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # a pool opening several connections makes one token
            if self._token is None or self._clock() - self._made_at >= self._renew_after:
                # In a thread: resolving credentials may call STS (a web identity, a role).
                self._token = await asyncio.to_thread(self._generate)
                self._made_at = self._clock()
            return self._token

    def __repr__(self) -> str:
        return "RdsAuthToken(<hidden>)"


def rds_token_generator(
    host: str, port: int, user: str, region: str, *, client: Any = None
) -> Callable[[], str]:
    """A function making RDS IAM tokens for `user` at `host:port` (a local SigV4 presign)."""
    if client is None:
        import boto3

        client = boto3.session.Session().client("rds", region_name=region)

    def generate() -> str:
        return str(
            client.generate_db_auth_token(
                DBHostname=host, Port=port, DBUsername=user, Region=region
            )
        )

    return generate


def _tls_context(sslmode: str, sslrootcert: Path | None) -> ssl.SSLContext:
    """The context for `require` (encrypted, unverified unless a CA file is named, as libpq
    does), `verify-ca` (signed by a trusted CA) or `verify-full` (and naming the host)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    verify = sslmode != "require" or sslrootcert is not None
    if verify:
        if sslrootcert is not None:
            context.load_verify_locations(cafile=str(sslrootcert))
        else:
            context.load_default_certs()
    context.check_hostname = sslmode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    return context


class DatabaseAccess:
    """The TLS context and password every connection to one PostgreSQL DSN uses."""

    def __init__(
        self,
        *,
        sslmode: str | None = None,
        sslrootcert: Path | None = None,
        token: RdsAuthToken | None = None,
        target_session_attrs: str | None = None,
    ) -> None:
        if token is not None and sslmode not in TLS_SSL_MODES:
            raise DatabaseSettingsError(
                "IAM tokens are sent only over TLS: set PAO_DATABASE_SSLMODE=verify-full"
            )
        self.sslmode = sslmode
        self.sslrootcert = sslrootcert
        self.token = token
        self.target_session_attrs = target_session_attrs
        self._ssl: ssl.SSLContext | str | bool | None
        if sslmode is None:
            self._ssl = None  # what the DSN says, else asyncpg's default (prefer)
        elif sslmode == "disable":
            self._ssl = False
        elif sslmode == "prefer":
            self._ssl = "prefer"  # asyncpg falls back to plain text when TLS is refused
        else:
            self._ssl = _tls_context(sslmode, sslrootcert)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        dsn: str,
        *,
        variable: str = "PAO_DATABASE_URL",
        writer: bool = True,
        token_client: Any = None,
    ) -> DatabaseAccess:
        """The access the settings give to `dsn` (named `variable` in errors); with IAM auth,
        a token bound to the DSN's host, port and user.

        A `writer`'s connections accept only a server that takes writes (unless the DSN says
        otherwise): after a failover, a connection whose DNS answer still named the demoted
        instance is refused at once (an outage, so tried again) instead of failing every write
        it is given with "read-only transaction".
        """
        token = None
        if settings.database_iam_auth:
            host, port, user = _iam_login(dsn, variable)
            region = settings.database_iam_region or settings.aws_region
            token = RdsAuthToken(rds_token_generator(host, port, user, region, client=token_client))
        named = "target_session_attrs" in dict(parse_qsl(urlsplit(dsn).query))
        return cls(
            sslmode=settings.database_sslmode,
            sslrootcert=settings.database_sslrootcert,
            token=token,
            target_session_attrs="read-write" if writer and not named else None,
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """What `asyncpg.connect` (or a pool) takes on top of the DSN."""
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        if self.token is not None:
            kwargs["password"] = self.token
        if self.target_session_attrs is not None:
            kwargs["target_session_attrs"] = self.target_session_attrs
        return kwargs

    async def connect(self, dsn: str, **kwargs: Any) -> asyncpg.Connection:
        """`asyncpg.connect` with this access; a refused certificate says what to check."""
        try:
            return await asyncpg.connect(dsn, **{**self.connect_kwargs(), **kwargs})
        except ssl.SSLCertVerificationError as exc:
            raise DatabaseTLSError(self._refused(dsn, exc)) from exc

    def libpq_params(self) -> list[tuple[str, str]]:
        """The sslmode and sslrootcert a libpq-style DSN (Terraform's pg backend) needs, when
        the settings name them; `prefer` is left to the DSN (the backend does not know it)."""
        if self.sslmode is None or self.sslmode == "prefer":
            return []
        params = [("sslmode", self.sslmode)]
        if self.sslrootcert is not None and self.sslmode != "disable":
            params.append(("sslrootcert", str(self.sslrootcert)))
        return params

    def _refused(self, dsn: str, exc: ssl.SSLCertVerificationError) -> str:
        parts = urlsplit(dsn)
        where = f"{parts.hostname or '?'}:{parts.port or DEFAULT_PORT}"
        trusted = (
            f"PAO_DATABASE_SSLROOTCERT ({self.sslrootcert})"
            if self.sslrootcert is not None
            else "the system's trust store (set PAO_DATABASE_SSLROOTCERT to the RDS CA bundle)"
        )
        reason = exc.verify_message or exc.reason or str(exc)
        wanted = "signed by a CA in " + trusted
        if self.sslmode == "verify-full":
            wanted += f" and name the host {parts.hostname!r}"
        return (
            f"PostgreSQL at {where} presented a certificate PAO refuses ({reason}): with "
            f"PAO_DATABASE_SSLMODE={self.sslmode} it must be {wanted}"
        )


def _iam_login(dsn: str, variable: str) -> tuple[str, int, str]:
    """The host, port and user an IAM token is made for, from `dsn`."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise DatabaseSettingsError(f"{variable} is not a postgresql:// URL") from None
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host")
    user = parts.username or query.get("user")
    if not host or not user:
        raise DatabaseSettingsError(
            f"PAO_DATABASE_IAM_AUTH=true needs {variable} to name the host and the user "
            "(postgresql://pao@cluster.cluster-xyz.eu-west-1.rds.amazonaws.com:5432/pao)"
        )
    if parts.password or query.get("password"):
        raise DatabaseSettingsError(
            f"PAO_DATABASE_IAM_AUTH=true logs in with IAM tokens, but {variable} carries a "
            "password: remove it from the URL"
        )
    return host, port, user
