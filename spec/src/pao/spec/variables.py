"""The variables engine, phases 1 and 2: parse templates and resolve their references.

A template is a Jinja2 string such as `{{ inputs.db_name | upper }}`. Parsing collects every
variable reference as a dotted path and every filter used, with syntax errors by line. Resolving
checks each reference against the declared scopes: `inputs` against the item's form, `outputs`
against earlier actions, `resource.outputs` against the item's own actions (what the resource's
earlier requests recorded), `secrets` against the item's declared secrets.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from pao.spec.sandbox import ENVIRONMENT, MAX_LOOP_DEPTH, source_cache

#: Fields each fixed scope offers; `env` is free-form (per-environment settings from config).
SCOPE_FIELDS: dict[str, frozenset[str] | None] = {
    "user": frozenset({"id", "name", "email", "teams"}),
    "request": frozenset(
        {
            "id",
            "correlation_id",
            "created_at",
            "environment",
            "item_id",
            "item_version",
            "kind",
            "resource_id",
        }
    ),
    "item": frozenset({"id", "name", "version", "category", "owner", "description", "tags"}),
    "system": frozenset({"platform_name", "region", "jira_url", "gateway_url"}),
    "env": None,
    "inputs": None,
    "outputs": None,
    "resource": frozenset({"id", "outputs"}),
    "secrets": None,
}
SCOPES = tuple(SCOPE_FIELDS)

#: Outputs every action of a type records, besides those it declares.
BUILTIN_OUTPUTS: dict[str, frozenset[str]] = {
    "jira": frozenset({"key", "url", "id", "status"}),
    "terraform": frozenset(),
    "rest": frozenset({"status_code"}),
}

#: Names a template may use that are not scopes.
_ALLOWED_GLOBALS = frozenset(
    {"range", "dict", "namespace", "loop", "true", "false", "none", "True", "False", "None"}
)


@dataclass(frozen=True, slots=True)
class Reference:
    """A variable used by a template: its dotted path and where it is in the template."""

    path: tuple[str, ...]
    line: int
    column: int = 1

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class ParsedTemplate:
    """Phase 1's result for one template."""

    source: str
    references: tuple[Reference, ...] = ()
    filters: tuple[tuple[str, int], ...] = ()
    tests: tuple[tuple[str, int], ...] = ()
    syntax_error: str | None = None
    error_line: int | None = None
    error_column: int | None = None
    #: a limit the template breaks by its shape (too deeply nested loops)
    limit_error: str | None = None

    @property
    def is_template(self) -> bool:
        return "{" in self.source


@source_cache(maxsize=8_192)
def parse_template(source: str) -> ParsedTemplate:
    """References, filters and tests of a template; a syntax error is reported, not raised."""
    if "{" not in source:
        return ParsedTemplate(source)
    lines = source.splitlines() or [""]
    try:
        tree = ENVIRONMENT.parse(source)
    except TemplateSyntaxError as exc:
        message = exc.message or str(exc)
        return ParsedTemplate(
            source,
            syntax_error=message,
            error_line=exc.lineno,
            error_column=_error_column(lines, exc.lineno, message),
        )
    local_names = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: list[Reference] = []
    _collect(tree, local_names, found)
    references = tuple(
        Reference(r.path, r.line, _column(lines, r.line, r.dotted, r.path[0])) for r in found
    )
    filters = tuple((f.name, f.lineno) for f in _post_order(tree, nodes.Filter))
    tests = tuple((t.name, t.lineno) for t in tree.find_all(nodes.Test))
    depth = _loop_depth(tree)
    limit = (
        f"loops nested {depth} deep; the limit is {MAX_LOOP_DEPTH}"
        if depth > MAX_LOOP_DEPTH
        else None
    )
    return ParsedTemplate(source, references, filters, tests, limit_error=limit)


def _post_order(node: nodes.Node, kind: type[nodes.Node]) -> Iterator[Any]:
    """Nodes of a kind, inner before outer: filters in the order they apply."""
    for child in node.iter_child_nodes():
        yield from _post_order(child, kind)
    if isinstance(node, kind):
        yield node


def _column(lines: list[str], line: int, text: str, fallback: str) -> int:
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    at = row.find(text)
    if at < 0:
        at = row.find(fallback)
    return at + 1 if at >= 0 else 1


def _error_column(lines: list[str], line: int, message: str) -> int:
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    token = re.search(r"unexpected '(.+?)'", message)
    if token:
        at = row.rfind(token.group(1))
        if at >= 0:
            return at + 1
    opening = max(row.rfind("{{"), row.rfind("{%"))
    return opening + 1 if opening >= 0 else 1


def _loop_depth(node: nodes.Node, depth: int = 0) -> int:
    here = depth + 1 if isinstance(node, nodes.For) else depth
    return max([here, *(_loop_depth(child, here) for child in node.iter_child_nodes())])


def _chain(node: nodes.Node) -> tuple[list[str], nodes.Node] | None:
    """For `a.b['c'].d`, the path [a, b, c, d] and the base Name; None if it is not such a chain."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str | int)
        ):
            parts.append(str(node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return list(reversed(parts)), node
        else:
            return None


def _collect(node: nodes.Node, local_names: set[str], out: list[Reference]) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        chain = _chain(node)
        if chain is not None:
            path, base = chain
            if base.ctx == "load" and path[0] not in local_names:
                out.append(Reference(tuple(path), node.lineno))
            if isinstance(node, nodes.Getitem):
                _collect(node.arg, local_names, out)
            return
    for child in node.iter_child_nodes():
        _collect(child, local_names, out)


# --- phase 2: resolve ---------------------------------------------------------------------------


InputTree = dict[str, "InputTree | None"]


def input_fields(form_schema: Mapping[str, Any]) -> InputTree:
    """Every field a form can hold, conditional ones included: name -> nested fields or None."""
    tree: InputTree = {}
    for schema in _property_holders(form_schema):
        for name, prop in (schema.get("properties") or {}).items():
            nested = None
            if isinstance(prop, Mapping) and (prop.get("properties") or prop.get("allOf")):
                nested = input_fields(prop)
            existing = tree.get(name)
            if isinstance(existing, dict) and isinstance(nested, dict):
                existing.update(nested)
            else:
                tree[name] = existing if existing is not None else nested
    return tree


def _property_holders(schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if not isinstance(schema, Mapping):
        return
    yield schema
    for keyword in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(keyword) or []:
            yield from _property_holders(sub)
    for keyword in ("then", "else"):
        if isinstance(schema.get(keyword), Mapping):
            yield from _property_holders(schema[keyword])
    for sub in (schema.get("dependentSchemas") or {}).values():
        yield from _property_holders(sub)


@dataclass(frozen=True)
class Declarations:
    """What templates of one place in an item may refer to."""

    inputs: InputTree | None  # None: the form is unknown, any input may be referenced
    secrets: frozenset[str] = frozenset()
    #: earlier actions -> the output names they record (None: any)
    outputs: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    #: the item's actions -> the output names they record, as `resource.outputs` offers them
    resource_outputs: Mapping[str, frozenset[str] | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolutionIssue:
    """A reference or filter that does not resolve."""

    rule: str
    message: str
    line: int
    column: int | None = None


def resolve(parsed: ParsedTemplate, declared: Declarations) -> list[ResolutionIssue]:
    """Every reference, filter and test of a parsed template that is not declared."""
    issues: list[ResolutionIssue] = []
    if parsed.limit_error:
        issues.append(ResolutionIssue("template-limits", parsed.limit_error, 1))
    for ref in parsed.references:
        message = check_reference(ref.path, declared)
        if message:
            issues.append(ResolutionIssue("template-reference", message, ref.line, ref.column))
    for name, line in parsed.filters:
        if name not in ENVIRONMENT.filters:
            issues.append(
                ResolutionIssue(
                    "template-filter",
                    f"unknown filter '{name}'{_suggest(name, ENVIRONMENT.filters)}",
                    line,
                )
            )
    for name, line in parsed.tests:
        if name not in ENVIRONMENT.tests:
            issues.append(
                ResolutionIssue(
                    "template-filter",
                    f"unknown test '{name}'{_suggest(name, ENVIRONMENT.tests)}",
                    line,
                )
            )
    return issues


def check_reference(path: tuple[str, ...], declared: Declarations) -> str | None:
    """Why a reference does not resolve, or None when it does."""
    scope = path[0]
    if scope in _ALLOWED_GLOBALS:
        return None
    if scope not in SCOPE_FIELDS:
        return f"unknown scope '{scope}'{_suggest(scope, SCOPES)}; scopes are {', '.join(SCOPES)}"
    if len(path) == 1:
        return None
    name = path[1]
    if scope == "inputs":
        return _check_input(path[1:], declared.inputs)
    if scope == "secrets":
        if name not in declared.secrets:
            return (
                f"secrets.{name} is not declared in the item's secrets"
                f"{_suggest(name, declared.secrets)}"
            )
        return None
    if scope == "outputs":
        if name not in declared.outputs:
            earlier = ", ".join(declared.outputs) or "none"
            recorded = (
                f" (what the resource's earlier requests recorded is resource.outputs.{name})"
                if name in declared.resource_outputs
                else ""
            )
            return (
                f"outputs.{name} is not an earlier action{_suggest(name, declared.outputs)}; "
                f"earlier actions: {earlier}{recorded}"
            )
        return _check_output("outputs", path[1:], declared.outputs[name])
    if scope == "resource" and name == "outputs" and len(path) > 2:
        action = path[2]
        if action not in declared.resource_outputs:
            known = ", ".join(declared.resource_outputs) or "none"
            return (
                f"resource.outputs.{action} is not an action of the item"
                f"{_suggest(action, declared.resource_outputs)}; its actions: {known}"
            )
        return _check_output("resource.outputs", path[2:], declared.resource_outputs[action])
    fields = SCOPE_FIELDS[scope]
    if fields is not None and name not in fields:
        return f"{scope}.{name} does not exist{_suggest(name, fields)}; {scope} has " + ", ".join(
            sorted(fields)
        )
    return None


def _check_output(prefix: str, path: tuple[str, ...], known: frozenset[str] | None) -> str | None:
    """`path` is (action, output, ...): the output must be one the action records."""
    action = path[0]
    if len(path) > 1 and known is not None and path[1] not in known:
        return (
            f"{prefix}.{action}.{path[1]} is not an output of {action}"
            f"{_suggest(path[1], known)}; it records {', '.join(sorted(known)) or 'none'}"
        )
    return None


def _check_input(path: tuple[str, ...], tree: InputTree | None) -> str | None:
    walked = ["inputs"]
    for name in path:
        if tree is None:
            return None  # a field without declared sub-fields may hold anything
        if name not in tree:
            where = ".".join(walked)
            return f"{where}.{name} is not a field of the form{_suggest(name, tree)}"
        walked.append(name)
        tree = tree[name]
    return None


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
