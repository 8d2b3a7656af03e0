"""The catalog scripts and devctl, run as a platform engineer and CI would run them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, TEST_KEY_ID, TEST_SECRET
from pao.devctl.profiles import Profile, save_profile

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCRIPTS = REPO / "catalog" / "scripts"
FIXTURES = REPO / "catalog" / "tests"


def clean_env(**extra: str) -> dict[str, str]:
    """No PAO_/AWS_ settings, and devctl not on PATH: scripts must find it themselves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_", "DEVCTL"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN
    )
    env["COLUMNS"] = "200"
    return env | extra


async def run(
    *argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        env=env or clean_env(),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_validate_catalog_passes_valid_files() -> None:
    code, out, err = await run(
        SCRIPTS / "validate-catalog.sh",
        *sorted((REPO / "catalog").glob("compute/*.yaml")),
        FIXTURES / "valid" / "example-catalog-item.yaml",
    )
    assert code == 0, err
    assert out.count(": valid") == 3


async def test_validate_catalog_stops_at_the_first_invalid_file_with_file_and_line() -> None:
    first = FIXTURES / "invalid" / "broken-form-schema.yaml"
    second = FIXTURES / "invalid" / "missing-required-fields.yaml"
    code, _, err = await run(SCRIPTS / "validate-catalog.sh", first, second)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines, "problems are printed"
    assert all(line.startswith(f"{first}:") for line in lines)
    assert "not a JSON Schema type" in err
    assert str(second) not in err


async def test_validate_all_checks_the_whole_catalog_and_fixture_catalogs() -> None:
    code, out, err = await run(SCRIPTS / "validate-all.sh")
    assert code == 0, err
    assert "11 item(s), 1 bundle(s), all valid" in out
    code, _, err = await run(SCRIPTS / "validate-all.sh", FIXTURES / "invalid" / "duplicate-id")
    assert code == 1
    assert "[duplicate-id" in err
    code, _, err = await run(
        SCRIPTS / "validate-all.sh", FIXTURES / "invalid" / "bad-bundle-dependency"
    )
    assert code == 1
    assert "bundles/cache-stack.yaml:" in err
    assert "[bundle-reference" in err


async def test_test_template_renders_an_item_from_its_example_or_given_inputs(
    tmp_path: Path,
) -> None:
    code, out, err = await run(SCRIPTS / "test-template.sh", "postgresql-rds")
    assert code == 0, err
    assert "PostgreSQL orders (medium, prod)" in out
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(
        yaml.safe_dump(
            {
                "app_name": "shop",
                "environment": "prod",
                "cost_center": "CC-0001",
                "replicas": 3,
                "container_image": "registry.example.com/shop:1.0.0",
            }
        )
    )
    code, out, err = await run(SCRIPTS / "test-template.sh", "eks-application", inputs)
    assert code == 0, err
    assert '"url": "/clusters/platform-prod/fargate-profiles"' in out
    assert '"namespace": "shop"' in out


async def test_validate_changed_checks_only_changed_files_and_requires_a_bump(
    tmp_path: Path,
) -> None:
    work = tmp_path / "catalog-repo"
    shutil.copytree(REPO / "catalog", work, ignore=shutil.ignore_patterns("tests"))
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "ci@example.com"],
        ["config", "user.name", "CI"],
        ["add", "-A"],
        ["commit", "-q", "-m", "base"],
    ):
        subprocess.run(["git", *args], cwd=work, check=True)
    env = clean_env(DEVCTL=str(BIN / "devctl"))
    code, out, _ = await run(work / "scripts" / "validate-changed.sh", "main", env=env)
    assert (code, out.strip()) == (0, "no catalog files changed since main")

    item = work / "databases" / "postgresql-rds.yaml"
    item.write_text(item.read_text().replace("Please provision", "Kindly provision"))
    code, _, err = await run(work / "scripts" / "validate-changed.sh", "main", env=env)
    assert code == 1
    assert "[version-bump" in err
    assert "databases/postgresql-rds.yaml" in err

    item.write_text(item.read_text().replace("version: 1.2.0", "version: 1.2.1"))
    code, out, err = await run(work / "scripts" / "validate-changed.sh", "main", env=env)
    assert code == 0, err
    assert "checking 1 file(s)" in out


def profile(tmp_path: Path, gateway: str, *, admin: bool = False) -> dict[str, str]:
    path = tmp_path / "devctl.yaml"
    key, secret = ("PAOADMINKEY000000001", "admin-secret") if admin else (TEST_KEY_ID, TEST_SECRET)
    save_profile(
        "test",
        Profile(endpoint=gateway, access_key_id=key, secret_access_key=secret),
        make_default=True,
        path=path,
    )
    return clean_env(PAO_CONFIG_FILE=str(path))


async def test_devctl_catalog_list_get_and_schema(gateway: str, tmp_path: Path) -> None:
    env = profile(tmp_path, gateway)
    code, out, err = await run(BIN / "devctl", "catalog", "list", env=env)
    assert code == 0, err
    assert "11 of 11 item(s)" in out
    assert "postgresql-rds" in out
    code, out, err = await run(
        BIN / "devctl", "-o", "json", "catalog", "list", "--owner", "team-data", env=env
    )
    assert [i["id"] for i in json.loads(out)["items"]] == ["postgresql-rds", "postgresql-standard"]
    code, out, err = await run(BIN / "devctl", "catalog", "get", "eks-application", env=env)
    assert code == 0, err
    assert "container_image" in out
    assert "fargate_profile" in out
    code, out, _ = await run(
        BIN / "devctl", "catalog", "get", "eks-application", "--schema", env=env
    )
    assert json.loads(out)["properties"]["replicas"]["maximum"] == 20


async def test_devctl_reports_unknown_items_and_refused_refreshes(
    gateway: str, tmp_path: Path
) -> None:
    env = profile(tmp_path, gateway)
    code, _, err = await run(BIN / "devctl", "catalog", "get", "mainframe", env=env)
    assert code == 1
    assert "PAO-CAT-001" in err
    code, _, err = await run(BIN / "devctl", "catalog", "refresh", env=env)
    assert code == 1
    assert "PAO-AUTH-010" in err
    code, out, err = await run(
        BIN / "devctl", "catalog", "refresh", env=profile(tmp_path, gateway, admin=True)
    )
    assert code == 0, err
    assert "catalog unchanged" in out


async def test_devctl_validates_remotely_with_the_same_verdict(
    gateway: str, tmp_path: Path
) -> None:
    env = profile(tmp_path, gateway)
    fixture = FIXTURES / "invalid" / "undeclared-template-reference.yaml"
    code, _, err = await run(
        BIN / "devctl", "validate", "catalog-item", "--remote", fixture, env=env
    )
    assert code == 1
    assert f"{fixture}:28:61: inputs.cache_size is not a field" in err


async def test_the_integration_script_checks_a_running_pao(gateway: str, tmp_path: Path) -> None:
    code, out, err = await run(
        SCRIPTS / "integration-test.sh", env=profile(tmp_path, gateway, admin=True)
    )
    assert code == 0, err + out
    assert "serves every item" in out
