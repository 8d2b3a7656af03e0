"""What `test/variables` shows: each phase of the engine applied to a template, step by step."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from pao.spec.problems import walk
from pao.spec.rendering import SECRET_MASK, RenderError, render_string
from pao.spec.sandbox import ENVIRONMENT
from pao.spec.variables import SCOPES, Declarations, check_reference, parse_template


def masked(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context with every secret replaced by the mask; secrets never reach a render here."""
    out = {k: v for k, v in context.items() if k != "secrets"}
    out["secrets"] = {name: SECRET_MASK for name in (context.get("secrets") or {})}
    return out


def _undeclared(path: tuple[str, ...], found: bool) -> str | None:
    """Without an item to declare fields, a reference resolves when the context holds it."""
    if path[0] not in SCOPES:
        return None if path[0] in ENVIRONMENT.globals else f"unknown scope '{path[0]}'"
    return None if found else f"{'.'.join(path)} is not in the context"


def explain_template(
    source: str, context: Mapping[str, Any], declared: Declarations | None = None
) -> dict[str, Any]:
    """Parse, resolve and substitute one template, reporting each phase and its errors."""
    safe = masked(context)
    parsed = parse_template(source)
    parse: dict[str, Any] = {
        "ok": parsed.syntax_error is None,
        "references": [
            {"path": r.dotted, "line": r.line, "column": r.column} for r in parsed.references
        ],
        "filters": [
            {"name": name, "line": line, "known": name in ENVIRONMENT.filters}
            for name, line in parsed.filters
        ],
        "errors": [],
    }
    result: dict[str, Any] = {"template": source, "parse": parse}
    if parsed.syntax_error:
        parse["errors"].append(
            {
                "message": parsed.syntax_error,
                "line": parsed.error_line,
                "column": parsed.error_column,
            }
        )
        result["resolve"] = result["substitute"] = {"ok": False, "skipped": "syntax error"}
        result["output"] = None
        return result
    resolutions = []
    for ref in parsed.references:
        found, value = walk(safe, ref.path)
        problem = (
            check_reference(ref.path, declared)
            if declared is not None
            else _undeclared(ref.path, found)
        )
        resolutions.append(
            {
                "path": ref.dotted,
                "scope": ref.path[0],
                "line": ref.line,
                "column": ref.column,
                "resolved": problem is None and found,
                "value": value if found else None,
                "problem": problem if problem else (None if found else "no value in the context"),
            }
        )
    unknown_filters = [f for f in parse["filters"] if not f["known"]]
    errors = [
        {"message": r["problem"], "line": r["line"], "column": r["column"]}
        for r in resolutions
        if r["problem"] and not r["resolved"]
    ]
    errors += [
        {"message": f"unknown filter '{f['name']}'", "line": f["line"], "column": None}
        for f in unknown_filters
    ]
    if parsed.limit_error:
        errors.append({"message": parsed.limit_error, "line": 1, "column": None})
    result["resolve"] = {"ok": not errors, "references": resolutions, "errors": errors}
    try:
        output = render_string(source, safe)
        result["substitute"] = {
            "ok": True,
            "output": output,
            "type": type(output).__name__,
            "errors": [],
        }
        result["output"] = output
    except RenderError as exc:
        result["substitute"] = {
            "ok": False,
            "output": None,
            "errors": [{"message": exc.message, "line": exc.line}],
        }
        result["output"] = None
    return result


def templates_of(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(JSON pointer, template) for every string inside a JSON-like value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from templates_of(sub, f"{path}/{key}")
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from templates_of(sub, f"{path}/{index}")


def merge_context(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Scope by scope, the given values over the defaults."""
    merged = copy.deepcopy(dict(defaults))
    for scope, values in given.items():
        if isinstance(values, Mapping) and isinstance(merged.get(scope), dict):
            merged[scope].update(values)
        else:
            merged[scope] = values
    return merged
