"""devctl for people outside this repository: the wheels `make dist` builds install with plain pip
and no network into a fresh virtual environment, and devctl.pyz runs on a bare interpreter."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from glob import glob
from pathlib import Path

import pytest

from conftest import REPO, TEST_KEY_ID, TEST_SECRET
from pao.devctl.profiles import Profile, save_profile
from pao.devctl.version import __version__

CATALOG = REPO / "catalog"
INVALID_ITEM = CATALOG / "tests/invalid/missing-required-fields.yaml"
#: Not in the workspace's venv: the interpreter a person has before installing anything.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
COMPILED = ("pydantic_core", "rpds_py", "pyyaml", "regex", "markupsafe")
CARRIED = ("3.11", "3.12", "3.13", "3.14")


def interpreter(version: str) -> str | None:
    """A CPython `version` on this machine (PATH or pyenv), or None."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")))
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; print(sys.version_info[:2])"]
        answer = subprocess.run(probe, capture_output=True, text=True, check=False)
        if answer.stdout.strip() == str(tuple(int(p) for p in version.split("."))):
            return candidate
    return None


def other_pythons(versions: tuple[str, ...]) -> list:
    return [
        pytest.param(
            version,
            marks=pytest.mark.skipif(not interpreter(version), reason=f"no CPython {version} here"),
        )
        for version in versions
    ]


def clean_env(tmp: Path) -> dict[str, str]:
    """No workspace venv, no pip configuration of this machine, no PAO or AWS settings."""
    drop = ("PAO_", "AWS_", "PIP_", "PYTHON", "VIRTUAL_ENV", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | {"PIP_CONFIG_FILE": os.devnull, "SHIV_ROOT": str(tmp / "shiv"), "COLUMNS": "200"}


def run(*argv: str | Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=tmp,
        env=clean_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make dist` builds, into a temporary folder instead of the repository's dist/."""
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, str(REPO / "cli/dist.py"), "--out", str(out)]
    # The build runs where a release is made: this machine's pip and uv settings apply.
    result = subprocess.run(build, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the workspace with devctl installed from the folder alone."""
    home = tmp_path_factory.mktemp("user")
    created = run(SYSTEM_PYTHON, "-m", "venv", home / "venv", tmp=home)
    assert created.returncode == 0, created.stderr
    pip = home / "venv/bin/pip"
    result = run(pip, "install", "--no-index", "--find-links", dist, "pao-devctl", tmp=home)
    assert result.returncode == 0, result.stdout + result.stderr
    return home / "venv/bin/devctl"


def test_the_folder_carries_each_compiled_wheel_for_every_python(dist: Path) -> None:
    names = {path.name for path in dist.iterdir()}
    assert f"pao_devctl-{__version__}-py3-none-any.whl" in names
    assert {"devctl.pyz", "SHA256SUMS"} <= names
    for package in COMPILED:
        for python in CARRIED:
            abi = "cp" + python.replace(".", "")
            assert any(n.startswith(package + "-") and f"-{abi}-{abi}-" in n for n in names), (
                package,
                python,
            )
    listed = (dist / "SHA256SUMS").read_text()
    assert "  devctl.pyz\n" in listed
    assert f"  pao_devctl-{__version__}-py3-none-any.whl\n" in listed


def test_wheels_install_offline_and_validate_the_catalog(installed: Path, tmp_path: Path) -> None:
    help_text = run(installed, "--help", tmp=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "Usage: devctl" in help_text.stdout

    valid = run(installed, "validate", "catalog", CATALOG, tmp=tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "all valid" in valid.stdout

    invalid = run(installed, "validate", "catalog-item", INVALID_ITEM, tmp=tmp_path)
    assert invalid.returncode == 1, invalid.stdout + invalid.stderr
    assert "Traceback" not in invalid.stderr


@pytest.mark.parametrize("python", ["system", *other_pythons(("3.12", "3.13", "3.14"))])
def test_pyz_runs_on_a_bare_interpreter(dist: Path, python: str, tmp_path: Path) -> None:
    executable = SYSTEM_PYTHON if python == "system" else interpreter(python)
    assert executable
    # -I -S: no site-packages of that interpreter, only what the .pyz carries.
    pyz = (executable, "-I", "-S", dist / "devctl.pyz")
    help_text = run(*pyz, "--help", tmp=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "validate" in help_text.stdout

    valid = run(*pyz, "validate", "catalog", CATALOG, tmp=tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "all valid" in valid.stdout


@pytest.mark.parametrize("python", other_pythons(("3.10",)))
def test_pyz_names_the_pythons_it_runs_on_to_an_older_one(
    dist: Path, python: str, tmp_path: Path
) -> None:
    executable = interpreter(python)
    assert executable
    result = run(executable, "-I", "-S", dist / "devctl.pyz", "--help", tmp=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: devctl.pyz runs on CPython 3.11, 3.12, 3.13, 3.14")
    assert "Traceback" not in result.stderr


@pytest.mark.asyncio(loop_scope="session")
async def test_installed_devctl_finds_the_server_compatible(
    installed: Path, gateway: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    profile = Profile(endpoint=gateway, access_key_id=TEST_KEY_ID, secret_access_key=TEST_SECRET)
    save_profile("local", profile, make_default=True, path=config)
    env = clean_env(tmp_path) | {"PAO_CONFIG_FILE": str(config)}
    proc = await asyncio.create_subprocess_exec(
        str(installed),
        "--output",
        "json",
        "version",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    data = json.loads(out)
    assert data["client"]["version"] == __version__
    assert data["compatible"] is True
    assert "warning" not in data
    assert b"warning" not in err
