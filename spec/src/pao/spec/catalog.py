"""A whole catalog: every item and bundle file, checked together (ids, paths, bundle references)."""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pao.spec.problems import Problem, pointer
from pao.spec.schemas import load_schemas
from pao.spec.validation import BUNDLE_KIND, ITEM_KIND, DocumentReport, validate_text

BUNDLE_DIR = "bundles"
#: Folders of a catalog repository that hold no items.
NON_ITEM_DIRS = frozenset({"schema", "templates", "scripts", "tests", "modules", ".github", "docs"})


def categories() -> tuple[str, ...]:
    """Item categories, as the schema defines them."""
    return tuple(load_schemas()["common-types.json"]["$defs"]["category"]["enum"])


@dataclass(frozen=True)
class CatalogFile:
    """A catalog file's path relative to the catalog root (POSIX form) and its text."""

    path: str
    text: str


@dataclass(frozen=True)
class Snapshot:
    """A valid catalog: items and bundles by id, and a content hash as its version."""

    version: str
    items: dict[str, dict[str, Any]]
    bundles: dict[str, dict[str, Any]]
    paths: dict[str, str]

    @classmethod
    def of(
        cls,
        items: dict[str, dict[str, Any]],
        bundles: dict[str, dict[str, Any]],
        paths: dict[str, str],
    ) -> Snapshot:
        canonical = json.dumps(
            {"items": items, "bundles": bundles}, sort_keys=True, separators=(",", ":"), default=str
        )
        version = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return cls(version, items, bundles, paths)


@dataclass
class CatalogReport:
    """The verdict on a whole catalog."""

    reports: list[DocumentReport]
    problems: list[Problem] = field(default_factory=list)
    snapshot: Snapshot | None = None

    @property
    def valid(self) -> bool:
        return not self.problems


def read_directory(root: Path) -> list[CatalogFile]:
    """Every item and bundle file under a catalog root, in path order."""
    files: list[CatalogFile] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            continue
        relative = path.relative_to(root)
        if relative.parts[0] in NON_ITEM_DIRS or len(relative.parts) == 1:
            continue
        files.append(CatalogFile(relative.as_posix(), path.read_text(encoding="utf-8")))
    return files


def validate_catalog(files: Iterable[CatalogFile]) -> CatalogReport:
    """Validate every file, then the rules that span files."""
    # Parsing allocates many small containers and frees few: the cyclic collector would walk
    # them again and again for nothing, so it pauses while the files are read.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        reports = [validate_text(f.text, f.path) for f in files]
    finally:
        if gc_was_enabled:
            gc.enable()
    problems = [p for r in reports for p in r.problems]
    items: dict[str, dict[str, Any]] = {}
    bundles: dict[str, dict[str, Any]] = {}
    paths: dict[str, str] = {}
    first_file: dict[tuple[str, str], str] = {}
    for report in reports:
        if report.data is None or report.id is None or not isinstance(report.id, str):
            continue
        kind = report.kind or ""
        key = (kind, report.id)
        if key in first_file:
            problems.append(
                _located(
                    report,
                    Problem(
                        "duplicate-id",
                        f"id '{report.id}' is already used by {first_file[key]}",
                        pointer("metadata", "id"),
                    ),
                )
            )
            continue
        first_file[key] = report.file or "?"
        problems.extend(_path_problems(report))
        if not report.valid:
            continue
        if kind == ITEM_KIND:
            items[report.id] = report.data
            paths[report.id] = report.file or ""
        elif kind == BUNDLE_KIND:
            bundles[report.id] = report.data
    by_file = {r.file: r for r in reports}
    for bundle_id, bundle in bundles.items():
        report = by_file[first_file[(BUNDLE_KIND, bundle_id)]]
        problems.extend(_located(report, p) for p in bundle_problems(bundle, items))
    for item_id, item in items.items():
        replaced_by = item["metadata"].get("deprecation", {}).get("replaced_by")
        if replaced_by and replaced_by not in items:
            report = by_file[paths[item_id]]
            problems.append(
                _located(
                    report,
                    Problem(
                        "item-reference",
                        f"replaced_by names '{replaced_by}', which is not in the catalog",
                        pointer("metadata", "deprecation", "replaced_by"),
                    ),
                )
            )
    report = CatalogReport(reports, problems)
    if not problems:
        report.snapshot = Snapshot.of(items, bundles, paths)
    return report


def _located(report: DocumentReport, problem: Problem) -> Problem:
    return report.place(problem)


def _path_problems(report: DocumentReport) -> list[Problem]:
    """An item lives at <category>/<id>.yaml, a bundle at bundles/<id>.yaml."""
    if report.file is None or report.data is None:
        return []
    path = PurePosixPath(report.file)
    folder = path.parts[0] if len(path.parts) > 1 else ""
    expected_folder = (
        (report.data.get("metadata") or {}).get("category")
        if report.kind == ITEM_KIND
        else BUNDLE_DIR
    )
    problems = []
    if report.kind == ITEM_KIND and folder not in categories() and folder != BUNDLE_DIR:
        problems.append(
            Problem(
                "naming",
                f"'{folder}' is not a category folder; categories: {', '.join(categories())}",
                pointer("metadata", "category"),
            )
        )
    elif expected_folder and folder != expected_folder:
        problems.append(
            Problem(
                "naming",
                f"this {report.kind} belongs in {expected_folder}/, not {folder}/",
                pointer("metadata", "category") if report.kind == ITEM_KIND else "",
            )
        )
    if path.stem != report.id:
        problems.append(
            Problem(
                "naming",
                f"the file must be named {report.id}{path.suffix} after its id",
                pointer("metadata", "id"),
            )
        )
    return [report.place(p) for p in problems]


def bundle_problems(bundle: dict[str, Any], items: dict[str, dict[str, Any]]) -> list[Problem]:
    """A bundle's items exist, its dependencies name entries of the bundle, and have no cycle."""
    problems: list[Problem] = []
    entries = bundle["items"]
    refs = [e["ref"] for e in entries]
    for index, entry in enumerate(entries):
        if refs.count(entry["ref"]) > 1 and refs.index(entry["ref"]) != index:
            problems.append(
                Problem(
                    "bundle-reference",
                    f"two entries are named '{entry['ref']}'",
                    pointer("items", index, "ref"),
                )
            )
        if entry["item"] not in items:
            problems.append(
                Problem(
                    "bundle-reference",
                    f"item '{entry['item']}' is not in the catalog",
                    pointer("items", index, "item"),
                )
            )
        for d, dependency in enumerate(entry.get("depends_on") or []):
            if dependency not in refs:
                problems.append(
                    Problem(
                        "bundle-reference",
                        f"depends_on names '{dependency}', which is not an entry "
                        f"of this bundle (entries: {', '.join(refs)})",
                        pointer("items", index, "depends_on", d),
                    )
                )
            elif dependency == entry["ref"]:
                problems.append(
                    Problem(
                        "bundle-cycle",
                        f"'{dependency}' depends on itself",
                        pointer("items", index, "depends_on", d),
                    )
                )
        item = items.get(entry["item"])
        if item is not None:
            fields = (item["form"]["schema"].get("properties") or {}).keys()
            for name in entry.get("inputs") or {}:
                if name not in fields:
                    problems.append(
                        Problem(
                            "bundle-reference",
                            f"preset input '{name}' is not a field of {entry['item']}",
                            pointer("items", index, "inputs", name),
                        )
                    )
    cycle = _find_cycle({e["ref"]: list(e.get("depends_on") or []) for e in entries})
    if cycle and len(cycle) > 2:
        problems.append(
            Problem("bundle-cycle", "dependency cycle: " + " -> ".join(cycle), pointer("items"))
        )
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt not in graph or nxt == node:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None
