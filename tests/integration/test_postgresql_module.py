"""The postgresql module: the real terraform and psql against the test server, checked with asyncpg.

Each test copies the module to its own directory (local state), uses database names nobody else
uses, and drops whatever is left of them afterwards, also when it fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from conftest import REPO

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        shutil.which("terraform") is None or shutil.which("psql") is None,
        reason="terraform or psql is not on PATH",
    ),
]

MODULE = REPO / "catalog" / "modules" / "postgresql"
VAR_FILE = "test.tfvars.json"
TIMEOUT = 120
FIRST_PASSWORD = "first-Pw-7c1e9a"
SECOND_PASSWORD = "second-Pw-42d0b3"


def admin_login(server_dsn: str) -> tuple[str, str | None]:
    """The server's DSN without its password (the module wants it so), and that password."""
    parts = urlsplit(server_dsn)
    if parts.password is None:
        return server_dsn, None
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(parts.username or '', safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), parts.password


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def verifies(rolpassword: str, rolname: str, password: str) -> bool:
    """Whether the stored verifier (SCRAM-SHA-256 or md5) is the one of `password`."""
    if rolpassword.startswith("md5"):
        return rolpassword == "md5" + hashlib.md5((password + rolname).encode()).hexdigest()  # noqa: S324
    # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    _, params, keys = rolpassword.split("$")
    iterations, salt = params.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Terraform:
    """The module in a directory of its own, run with the real binary and local state."""

    work_dir: Path
    admin_url: str
    env: dict[str, str]

    async def run(self, *args: str, check: bool = True) -> Run:
        process = await asyncio.create_subprocess_exec(
            "terraform",
            *args,
            cwd=self.work_dir,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a group of its own: a timeout also ends its provisioners
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        run = Run(process.returncode or 0, stdout.decode(), stderr.decode())
        if check:
            assert run.returncode == 0, f"terraform {args[0]} failed:\n{run.output}"
        return run

    def _write_variables(self, variables: dict[str, Any]) -> None:
        path = self.work_dir / VAR_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"admin_url": self.admin_url, **variables}, handle)

    async def apply(self, check: bool = True, **variables: Any) -> Run:
        self._write_variables(variables)
        return await self.run(
            "apply",
            "-input=false",
            "-no-color",
            "-auto-approve",
            f"-var-file={VAR_FILE}",
            check=check,
        )

    async def plan(self, check: bool = True, **variables: Any) -> Run:
        self._write_variables(variables)
        return await self.run(
            "plan", "-input=false", "-no-color", f"-var-file={VAR_FILE}", check=check
        )

    async def destroy(self, **variables: Any) -> Run:
        self._write_variables(variables)
        return await self.run(
            "destroy", "-input=false", "-no-color", "-auto-approve", f"-var-file={VAR_FILE}"
        )

    async def outputs(self) -> dict[str, Any]:
        raw = (await self.run("output", "-no-color", "-json")).stdout
        return {name: entry["value"] for name, entry in json.loads(raw).items()}

    def state_serial(self) -> int:
        return json.loads((self.work_dir / "terraform.tfstate").read_text())["serial"]


@dataclass
class Server:
    """The test server as its admin sees it, and the names a test has taken on it."""

    dsn: str
    password: str | None
    taken: list[str] = field(default_factory=list)

    def new_name(self) -> str:
        name = f"pgmod_{uuid.uuid4().hex[:10]}"
        self.taken.append(name)
        return name

    async def connect(self, database: str | None = None) -> asyncpg.Connection:
        dsn = with_database(self.dsn, database) if database else self.dsn
        return await asyncpg.connect(dsn, password=self.password)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        conn = await self.connect()
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await conn.close()

    async def database(self, name: str) -> asyncpg.Record | None:
        return await self.fetchrow(
            """
            SELECT d.oid, pg_get_userbyid(d.datdba) AS owner, d.datconnlimit,
                   shobj_description(d.oid, 'pg_database') AS comment
              FROM pg_database d WHERE d.datname = $1
            """,
            name,
        )

    async def role(self, name: str) -> asyncpg.Record | None:
        return await self.fetchrow(
            "SELECT oid, rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1", name
        )

    async def enforces_passwords(self) -> bool:
        """Whether a TCP login with a wrong password is refused (not when pg_hba says trust)."""
        try:
            conn = await asyncpg.connect(self.dsn, password="certainly-not-the-password")
        except asyncpg.InvalidPasswordError:
            return True
        await conn.close()
        return False

    async def drop_leftovers(self) -> None:
        conn = await self.connect()
        try:
            force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
            for name in self.taken:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
            for name in self.taken:
                for role in (name, f"{name}_owner"):
                    await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def server(postgres_server: str) -> AsyncIterator[Server]:
    dsn, password = admin_login(postgres_server)
    server = Server(dsn, password)
    try:
        yield server
    finally:
        await server.drop_leftovers()


@pytest_asyncio.fixture(loop_scope="session")
async def terraform(tmp_path: Path, server: Server) -> Terraform:
    work_dir = tmp_path / "postgresql"
    shutil.copytree(MODULE, work_dir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0"}
    if server.password is not None:
        env["PGPASSWORD"] = server.password
    tf = Terraform(work_dir, server.dsn, env)
    await tf.run("init", "-input=false", "-no-color")
    return tf


async def test_apply_creates_the_database_owned_by_a_login_role(
    terraform: Terraform, server: Server
):
    name = server.new_name()
    labels = {"team": "payments", "cost_center": "cc-17"}

    await terraform.apply(
        db_name=name, connection_limit=7, labels=labels, owner_password=FIRST_PASSWORD
    )

    database = await server.database(name)
    assert database is not None
    assert database["owner"] == f"{name}_owner"
    assert database["datconnlimit"] == 7
    assert json.loads(database["comment"]) == labels
    role = await server.role(f"{name}_owner")
    assert role["rolcanlogin"]
    assert verifies(role["rolpassword"], f"{name}_owner", FIRST_PASSWORD)
    outputs = await terraform.outputs()
    host, port = urlsplit(server.dsn).hostname, urlsplit(server.dsn).port or 5432
    assert outputs == {
        "database": name,
        "owner_role": f"{name}_owner",
        "host": host,
        "port": port,
        "connection_url": f"postgresql://{name}_owner@{host}:{port}/{name}",
        "owner_password": FIRST_PASSWORD,
    }
    conn = await asyncpg.connect(outputs["connection_url"], password=FIRST_PASSWORD)
    try:
        assert await conn.fetchval("SELECT current_user || '@' || current_database()") == (
            f"{name}_owner@{name}"
        )
    finally:
        await conn.close()


async def test_applying_again_without_changes_is_a_no_op(terraform: Terraform, server: Server):
    name = server.new_name()
    variables = {"db_name": name, "connection_limit": 3, "owner_password": FIRST_PASSWORD}
    await terraform.apply(**variables)
    created, serial = await server.database(name), terraform.state_serial()

    again = await terraform.apply(**variables)

    assert "No changes." in again.stdout
    assert "0 added, 0 changed, 0 destroyed" in again.stdout
    assert terraform.state_serial() == serial
    assert await server.database(name) == created


async def test_changing_the_limit_and_labels_alters_the_same_database(
    terraform: Terraform, server: Server
):
    name = server.new_name()
    await terraform.apply(db_name=name, connection_limit=5, labels={"team": "payments"})
    before = await server.database(name)

    plan = await terraform.plan(db_name=name, connection_limit=20, labels={"team": "billing"})
    changed = await terraform.apply(db_name=name, connection_limit=20, labels={"team": "billing"})

    assert "terraform_data.settings must be replaced" in plan.stdout
    assert "# terraform_data.database " not in plan.stdout
    assert "0 changed, 1 destroyed" in changed.stdout
    after = await server.database(name)
    assert after["oid"] == before["oid"]
    assert after["datconnlimit"] == 20
    assert json.loads(after["comment"]) == {"team": "billing"}

    await terraform.apply(db_name=name, connection_limit=-1, labels={})

    unlimited = await server.database(name)
    assert unlimited["oid"] == before["oid"]
    assert unlimited["datconnlimit"] == -1
    assert unlimited["comment"] is None


async def test_changing_the_password_alters_the_role_in_place(terraform: Terraform, server: Server):
    name = server.new_name()
    owner = f"{name}_owner"
    await terraform.apply(db_name=name, owner_password=FIRST_PASSWORD)
    database, first = await server.database(name), await server.role(owner)

    plan = await terraform.plan(db_name=name, owner_password=SECOND_PASSWORD)
    changed = await terraform.apply(db_name=name, owner_password=SECOND_PASSWORD)

    assert "(sensitive value)" in plan.stdout
    assert "terraform_data.password must be replaced" in plan.stdout
    assert "# terraform_data.database " not in plan.stdout
    for run in (plan, changed):
        assert FIRST_PASSWORD not in run.output
        assert SECOND_PASSWORD not in run.output
    second = await server.role(owner)
    assert second["oid"] == first["oid"]
    assert (await server.database(name))["oid"] == database["oid"]
    assert second["rolpassword"] != first["rolpassword"]
    assert verifies(second["rolpassword"], owner, SECOND_PASSWORD)
    if await server.enforces_passwords():
        url = with_database(terraform.admin_url, name)
        conn = await asyncpg.connect(url, user=owner, password=SECOND_PASSWORD)
        await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(url, user=owner, password=FIRST_PASSWORD)

    # The same password with a new version is set again: a fresh salt, the same password.
    await terraform.apply(db_name=name, owner_password=SECOND_PASSWORD, password_version=2)

    rotated = await server.role(owner)
    assert rotated["rolpassword"] != second["rolpassword"]
    assert verifies(rotated["rolpassword"], owner, SECOND_PASSWORD)

    await terraform.apply(db_name=name, owner_password="", password_version=2)

    cleared = await server.role(owner)
    assert cleared["rolpassword"] is None
    assert cleared["rolcanlogin"]
    assert (await server.database(name))["oid"] == database["oid"]


async def test_apply_completes_after_a_crash_between_role_and_database(
    terraform: Terraform, server: Server
):
    name = server.new_name()
    conn = await server.connect()
    try:
        # What a run leaves behind when it dies after the first statement (and then some).
        await conn.execute(f'CREATE ROLE "{name}_owner" NOLOGIN')
    finally:
        await conn.close()

    await terraform.apply(db_name=name, connection_limit=4, owner_password=FIRST_PASSWORD)

    database = await server.database(name)
    assert database["owner"] == f"{name}_owner"
    assert database["datconnlimit"] == 4
    role = await server.role(f"{name}_owner")
    assert role["rolcanlogin"]
    assert verifies(role["rolpassword"], f"{name}_owner", FIRST_PASSWORD)


async def test_every_script_runs_again_without_changing_anything(
    terraform: Terraform, server: Server
):
    name = server.new_name()
    owner = f"{name}_owner"
    await terraform.apply(db_name=name, connection_limit=6, labels={"team": "payments"})
    database, role = await server.database(name), await server.role(owner)
    env = {
        **terraform.env,
        "ADMIN_URL": terraform.admin_url,
        "OWNER_PASSWORD": FIRST_PASSWORD,
    }

    async def psql(script: str, **variables: str) -> None:
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", terraform.admin_url]
        for key, value in {"db_name": name, "owner_role": owner, **variables}.items():
            args += ["-v", f"{key}={value}"]
        process = await asyncio.create_subprocess_exec(
            "psql",
            *args,
            "-f",
            str(terraform.work_dir / "sql" / script),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        assert process.returncode == 0, f"{script}: {stdout.decode()}{stderr.decode()}"

    await psql("create.sql")
    await psql("settings.sql", connection_limit="6", comment='{"team":"payments"}')
    assert await server.database(name) == database
    assert await server.role(owner) == role

    await psql("password.sql", has_password="true")
    assert verifies((await server.role(owner))["rolpassword"], owner, FIRST_PASSWORD)

    await psql("destroy.sql")
    await psql("destroy.sql")
    assert await server.database(name) is None
    assert await server.role(owner) is None


async def test_destroy_drops_the_database_despite_open_sessions_and_the_role(
    terraform: Terraform, server: Server
):
    name = server.new_name()
    await terraform.apply(db_name=name, owner_password=FIRST_PASSWORD)
    session = await asyncpg.connect(
        with_database(terraform.admin_url, name), user=f"{name}_owner", password=FIRST_PASSWORD
    )
    try:
        await session.execute("CREATE TABLE orders (id bigint PRIMARY KEY)")

        await terraform.destroy(db_name=name, owner_password=FIRST_PASSWORD)

        assert await server.database(name) is None
        assert await server.role(f"{name}_owner") is None
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await session.fetchval("SELECT 1")
    finally:
        session.terminate()
    assert not json.loads((terraform.work_dir / "terraform.tfstate").read_text())["resources"]


async def test_a_new_db_name_replaces_the_database(terraform: Terraform, server: Server):
    old, new = server.new_name(), server.new_name()
    await terraform.apply(db_name=old, connection_limit=2)

    plan = await terraform.plan(db_name=new, connection_limit=2)
    await terraform.apply(db_name=new, connection_limit=2)

    assert "terraform_data.database must be replaced" in plan.stdout
    assert await server.database(old) is None
    assert await server.role(f"{old}_owner") is None
    replaced = await server.database(new)
    assert replaced["owner"] == f"{new}_owner"
    assert replaced["datconnlimit"] == 2


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"db_name": "Orders-DB"}, "db_name must match"),
        ({"db_name": "orders", "owner_role": "pg_orders"}, "owner_role must be empty or match"),
        ({"db_name": "orders", "connection_limit": 2.5}, "connection_limit must be a whole"),
        (
            {"db_name": "orders", "admin_url": "postgresql://postgres:pw@127.0.0.1/postgres"},
            "admin_url must not contain a password",
        ),
    ],
)
async def test_invalid_variables_are_rejected_before_anything_runs(
    terraform: Terraform, variables: dict[str, Any], message: str
):
    if "admin_url" in variables:
        terraform = Terraform(terraform.work_dir, variables.pop("admin_url"), terraform.env)

    plan = await terraform.plan(check=False, **variables)

    assert plan.returncode != 0
    assert "Resource precondition failed" in plan.stderr
    assert message in " ".join(plan.stderr.replace("│", " ").split())
