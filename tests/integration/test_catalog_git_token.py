"""The git catalog's HTTPS token reaches git without showing in the process list."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from pao.catalog import sources
from pao.catalog.sources import GitSource

pytestmark = pytest.mark.asyncio(loop_scope="session")


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def bare_repository(tmp_path: Path) -> Path:
    """A bare repository on `main` with one commit."""
    bare, work = tmp_path / "catalog.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    (work / "README.md").write_text("the catalog\n")
    git("add", "-A", cwd=work)
    git("-c", "user.email=p@example.com", "-c", "user.name=P", "commit", "-qm", "one", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return bare


async def test_the_token_is_in_no_git_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"ghp_{uuid.uuid4().hex}"
    forms = [token, base64.b64encode(f"x-access-token:{token}".encode()).decode()]
    started: list[tuple[tuple[str, ...], dict[str, str]]] = []
    real = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> Any:
        started.append((tuple(str(a) for a in args), dict(kwargs.get("env") or {})))
        return await real(*args, **kwargs)

    monkeypatch.setattr(sources.asyncio, "create_subprocess_exec", recording)
    source = GitSource(
        f"file://{bare_repository(tmp_path)}", cache_dir=tmp_path / "cache", token=token
    )

    fetched = await source.fetch()

    assert fetched.revision
    assert started
    assert [args for args, _ in started if any(f in a for f in forms for a in args)] == []
    (fetch_env,) = [env for args, env in started if "fetch" in args]
    # git itself still gets the header, from its environment.
    header = git("config", "--get", "http.extraHeader", cwd=tmp_path, env=fetch_env).strip()
    assert header == f"Authorization: Basic {forms[1]}"
