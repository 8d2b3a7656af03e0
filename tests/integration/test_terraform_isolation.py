"""Catalog modules run as catalog code: none of the worker's keys, no files from outside."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from pao.catalog.modules import CatalogFolder, ModuleError, ModuleSnapshots
from pao.fulfillment.executors import ActionError, TerraformExecutor
from pao.fulfillment.state_logins import (
    StateLogins,
    StateLoginsUnavailable,
    role_for,
    with_login,
)
from pao.fulfillment.terraform import TerraformError, TerraformRunner, schema_for

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH"),
]

ENVIRONMENT_MODULE = REPO / "tests" / "fixtures" / "terraform" / "environment"
PARAMETERSTORE = REPO / "catalog" / "modules" / "parameterstore"
WORKER_SECRETS = {
    "PAO_JIRA_TOKEN": "jira-token-of-the-worker-4711",
    "PAO_APIGATEWAY_SECRET": "gateway-secret-of-the-worker-0815",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-worker-2342",
    "AWS_SESSION_TOKEN": "aws-session-of-the-worker-1337",
    "TF_VAR_token": "variable-of-the-worker-9000",
}


def workspace() -> str:
    return f"req-{uuid.uuid4().hex[:8]}-environment"


def environment_of(path: Path) -> dict[str, str]:
    """The VAR=value lines `env` wrote."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


async def test_a_module_sees_none_of_the_workers_settings_or_credentials(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PAO_DATABASE_URL", database_url)
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PGPASSWORD", "pg-password-for-modules")
    monkeypatch.setenv("PGSERVICEFILE", "/etc/not-passed-on")
    runner = TerraformRunner(
        work_root=tmp_path / "work",
        state_dsn=database_url,
        timeout=120,
        passthrough_env=["PGPASSWORD"],
    )
    written = tmp_path / "seen.env"

    await runner.apply(ENVIRONMENT_MODULE, {"path": str(written)}, workspace=workspace())

    seen = environment_of(written)
    text = written.read_text()
    assert not [name for name in seen if name.startswith(("PAO_", "AWS_", "TF_VAR_"))]
    for value in WORKER_SECRETS.values():
        assert value not in text
    assert "PGSERVICEFILE" not in seen
    assert seen["PGPASSWORD"] == "pg-password-for-modules"
    assert seen["TF_IN_AUTOMATION"] == "1"
    assert "PATH" in seen
    home = Path(seen["HOME"])
    assert home != Path.home()
    assert home.is_relative_to(tmp_path / "work")


async def test_a_module_with_a_link_out_of_it_is_refused(tmp_path: Path, database_url: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("a key of the worker\n")
    module = tmp_path / "module"
    shutil.copytree(PARAMETERSTORE, module)
    (module / "key").symlink_to(outside / "id_rsa")
    runner = TerraformRunner(work_root=tmp_path / "work", state_dsn=database_url, timeout=120)

    with pytest.raises(TerraformError) as caught:
        await runner.apply(module, {"name": "/x", "type": "String"}, workspace=workspace())

    assert "symbolic link out of the module" in caught.value.message
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").rglob("id_rsa"))


def catalog_with_link_out(tmp_path: Path) -> Path:
    """A catalog whose modules/escape is a link to a folder elsewhere on the worker."""
    outside = tmp_path / "elsewhere"
    shutil.copytree(PARAMETERSTORE, outside)
    catalog = tmp_path / "catalog"
    (catalog / "modules").mkdir(parents=True)
    (catalog / "modules" / "escape").symlink_to(outside, target_is_directory=True)
    return catalog


@pytest.mark.parametrize("module", ["modules/../../etc", "/etc", "modules/escape"])
async def test_the_executor_refuses_a_module_outside_the_catalog(
    tmp_path: Path, database_url: str, module: str
):
    catalog = catalog_with_link_out(tmp_path)
    runner = TerraformRunner(work_root=tmp_path / "work", state_dsn=database_url)
    executor = TerraformExecutor(runner, catalog)

    with pytest.raises(ActionError) as caught:
        await executor.module_dir({"module": module}, None)

    assert "outside the catalog" in str(caught.value)
    assert not caught.value.transient


async def test_the_catalog_snapshots_no_module_linked_from_outside(tmp_path: Path):
    catalog = catalog_with_link_out(tmp_path)

    with pytest.raises(ModuleError) as caught:
        await ModuleSnapshots().local("modules/escape", CatalogFolder(root=catalog))

    assert "symbolic link out of the catalog" in str(caught.value)


STATE_READER = REPO / "tests" / "fixtures" / "terraform" / "state_reader"


async def _drop_roles(dsn: str, *roles: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for role in roles:
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if exists:
                await conn.execute(f'DROP OWNED BY "{role}"')
                await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


def probes_of(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


async def test_a_module_reads_only_its_own_state_with_the_login_it_is_given(
    tmp_path: Path, database_url: str
):
    runner = TerraformRunner(
        work_root=tmp_path / "work",
        state_dsn=database_url,
        timeout=120,
        state_logins=StateLogins(database_url, mode="on"),
    )
    other, own = workspace(), workspace()
    await runner.apply(ENVIRONMENT_MODULE, {"path": str(tmp_path / "first.env")}, workspace=other)
    written = tmp_path / "probes.txt"
    variables = {
        "path": str(written),
        "other_schema": schema_for(other),
        "own_schema": schema_for(own),
    }

    try:
        await runner.apply(STATE_READER, variables, workspace=own)
    finally:
        await _drop_roles(database_url, role_for(schema_for(other)), role_for(schema_for(own)))

    probes = probes_of(written)
    assert probes["user"] == role_for(schema_for(own))
    assert "permission denied" in probes["events"]
    assert "permission denied" in probes["other"]
    assert probes["own"] == "1"  # its own state, which it may read


async def test_without_the_right_to_make_roles_runs_share_the_state_login(
    tmp_path: Path, database_url: str
):
    import asyncpg

    role = f"pao_no_roles_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'x' NOCREATEROLE")
        limited = with_login(database_url, role, "x")
        with pytest.raises(StateLoginsUnavailable):
            await StateLogins(limited, mode="on").enabled()
        assert await StateLogins(limited, mode="auto").enabled() is False
        assert await StateLogins(database_url, mode="off").enabled() is False
    finally:
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
