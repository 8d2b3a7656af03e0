"""Service boundaries hold in the code: no service imports another service's internals.

A service package imports `pao.contracts`, `pao.spec`, `pao.shared` and itself. The gateway may
also use the public surface of the services it fronts (their command handlers and queries, the
catalog it serves), never their aggregates, folds or tables. The operator command composes the
services through their bootstraps only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "request", "fulfillment", "notification", "gateway")
FOUNDATION = {"contracts", "spec", "shared"}

#: What the gateway may use of each service it fronts.
GATEWAY_MAY_USE = {
    "pao.request.handlers",
    "pao.request.history",
    "pao.request.queries",
    "pao.catalog.bootstrap",
    "pao.catalog.history",
    "pao.catalog.modes",
    "pao.catalog.refresh",
    "pao.catalog.sources",
}


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "migrations" not in p.parts)


def imports(path: Path) -> set[str]:
    """Every `pao.` module a file imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pao.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pao."):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def service_of(module: str) -> str:
    return module.split(".")[1]


def offending(own: str, path: Path, allowed: set[str]) -> list[str]:
    bad = []
    for module in imports(path):
        other = service_of(module)
        if other in FOUNDATION or other == own:
            continue
        # `from pao.request import handlers` names the module pao.request.handlers
        if any(module == a or module.startswith(a + ".") for a in allowed):
            continue
        if module in {f"pao.{other}"} and any(a.startswith(module + ".") for a in allowed):
            continue  # the package itself, in `from pao.request import handlers`
        bad.append(module)
    return bad


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service_internals(service: str) -> None:
    root = REPO / "services" / service / "src" / "pao" / service
    allowed = GATEWAY_MAY_USE if service == "gateway" else set()
    problems = {
        str(path.relative_to(REPO)): bad
        for path in modules(root)
        if (bad := offending(service, path, allowed))
    }
    assert not problems, problems


def test_the_foundation_imports_no_service() -> None:
    problems = {}
    for member in FOUNDATION:
        for path in modules(REPO / member / "src" / "pao" / member):
            bad = [m for m in imports(path) if service_of(m) not in FOUNDATION]
            if bad:
                problems[str(path.relative_to(REPO))] = bad
    assert not problems, problems


def test_the_operator_command_composes_services_through_their_bootstraps() -> None:
    root = REPO / "services" / "stack" / "src" / "pao" / "stack"
    problems = {}
    for path in modules(root):
        bad = [
            m
            for m in imports(path)
            if service_of(m) in SERVICES
            and not (m.split(".")[2:3] == ["bootstrap"] or m == f"pao.{service_of(m)}")
        ]
        if bad:
            problems[str(path.relative_to(REPO))] = bad
    assert not problems, problems


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rules above are only worth something if they catch a violation."""
    probe = tmp_path / "worker.py"
    probe.write_text(
        "from pao.request.aggregate import RequestState\nfrom pao.request import states\n"
        "from pao.request import handlers\n",
        encoding="utf-8",
    )
    assert set(offending("fulfillment", probe, set())) >= {
        "pao.request.aggregate",
        "pao.request.states",
        "pao.request.handlers",
    }
    assert set(offending("gateway", probe, GATEWAY_MAY_USE)) == {
        "pao.request.aggregate",
        "pao.request.aggregate.RequestState",
        "pao.request.states",
    }
