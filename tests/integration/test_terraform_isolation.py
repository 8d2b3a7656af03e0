"""Catalog modules run as catalog code: none of the worker's keys, no files from outside."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from pao.catalog.modules import CatalogFolder, ModuleError, ModuleSnapshots
from pao.fulfillment.executors import ActionError, TerraformExecutor
from pao.fulfillment.terraform import TerraformError, TerraformRunner

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
