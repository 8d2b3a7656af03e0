"""Validating catalog files: JSON Schema first, then the rules a schema cannot express."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import regex
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from pao.spec import schemas
from pao.spec.documents import Document, DocumentError, parse
from pao.spec.lifecycle import RESERVED_NAMES, is_automated, modes_of
from pao.spec.problems import Problem, pointer, value_at
from pao.spec.variables import (
    BUILTIN_OUTPUTS,
    Declarations,
    input_fields,
    parse_template,
    resolve,
)

ITEM_KIND = "CatalogItem"
BUNDLE_KIND = "CatalogBundle"
#: An HTTP header name (an RFC 9110 token).
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass
class DocumentReport:
    """One file's verdict: its kind, id and data when readable, and every problem found."""

    file: str | None
    kind: str | None = None
    data: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    document: Document | None = field(default=None, repr=False)

    def place(self, problem: Problem) -> Problem:
        """A problem found elsewhere (e.g. across files), located in this file."""
        if self.document is None:
            return problem.at(file=self.file)
        return self.document.place(problem)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def id(self) -> str | None:
        metadata = (self.data or {}).get("metadata")
        return metadata.get("id") if isinstance(metadata, dict) else None


def validate_text(text: str, file: str | None = None) -> DocumentReport:
    """Validate one catalog file (an item or a bundle) on its own."""
    try:
        document = parse(text, file)
    except DocumentError as exc:
        return DocumentReport(file, problems=[exc.problem])
    kind = document.data.get("kind")
    report = DocumentReport(
        file, kind=kind if isinstance(kind, str) else None, data=document.data, document=document
    )
    if kind == ITEM_KIND:
        problems = list(item_problems(document.data))
    elif kind == BUNDLE_KIND:
        problems = list(
            _schema_problems(schemas.bundle_validator(), document.data, "catalog-bundle.json")
        )
    else:
        problems = [
            Problem(
                "schema",
                f"kind must be {ITEM_KIND} or {BUNDLE_KIND}, not {kind!r}",
                pointer("kind"),
            )
        ]
    report.problems = [_place(document, p) for p in problems]
    return report


def _place(document: Document, problem: Problem) -> Problem:
    """File line and column of a problem; for a template, of the spot inside the template."""
    if problem.template_line is None:
        return document.place(problem)
    start, column = document.locate(problem.pointer)
    block = document.value_style(problem.pointer) in ("|", ">")
    line = (start or 1) + problem.template_line - 1 + (1 if block else 0)
    text_lines = document.text.splitlines()
    template = value_at(document.data, problem.pointer)
    if isinstance(template, str) and 0 < line <= len(text_lines):
        template_row = (template.splitlines() or [""])[problem.template_line - 1 :][:1]
        found = text_lines[line - 1].find(template_row[0]) if template_row else -1
        if found >= 0:
            column = found + (problem.template_column or 1)
    return Problem(
        problem.rule,
        problem.message,
        problem.pointer,
        document.file,
        line,
        column,
        problem.template_line,
        problem.template_column,
    )


def _schema_problems(
    validator: Draft202012Validator, data: Any, fast_name: str | None = None
) -> Iterator[Problem]:
    """Every error of `data`; a compiled check first skips the slow walk for valid documents."""
    if fast_name is not None and schemas.fast_check(fast_name)(data):
        return
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        yield Problem("schema", _schema_message(error), pointer(*error.absolute_path))


def _schema_message(error: ValidationError) -> str:
    field_name = error.absolute_path[-1] if error.absolute_path else None
    if error.validator == "required":
        return error.message
    if error.validator == "additionalProperties":
        return error.message
    prefix = f"{field_name}: " if isinstance(field_name, str) else ""
    if error.validator == "pattern":
        return f"{prefix}{error.instance!r} does not match {error.validator_value!r}"
    if error.validator in ("if", "then", "else", "allOf", "anyOf", "oneOf", "not", "contains"):
        detail = "; ".join(sorted({c.message for c in error.context})) if error.context else ""
        return prefix + (detail or error.message)
    return prefix + error.message


def item_problems(item: dict[str, Any]) -> Iterator[Problem]:
    """Every problem of one item: schema, form, examples, action names, templates."""
    schema_problems = list(_schema_problems(schemas.item_validator(), item, "catalog-item.json"))
    yield from schema_problems
    form = (item.get("form") or {}).get("schema")
    form_ok = isinstance(form, dict) and not any(
        p.pointer.startswith("/form") for p in schema_problems
    )
    if isinstance(form, dict):
        for problem in _form_problems(form):
            form_ok = False
            yield problem
    if form_ok:
        yield from _example_problems(form)
        order = (item.get("form") or {}).get("order") or []
        fields = input_fields(form)
        for index, name in enumerate(order):
            if name not in fields:
                yield Problem(
                    "form-order",
                    f"form.order names '{name}', which is not a field",
                    pointer("form", "order", index),
                )
    if schema_problems:
        return
    # With a broken form, input references cannot be checked: accept them rather than cascade.
    yield from _action_problems(item, input_fields(form) if form_ok else None)
    yield from _rest_problems(item)


_JSON_TYPES = "array, boolean, integer, null, number, object, string"


def _form_problems(form: dict[str, Any]) -> Iterator[Problem]:
    """The form must be a JSON Schema using the keywords PAO forms support, with valid patterns."""
    if not schemas.fast_check("form-schema.json")(form):
        for error in schemas.form_dialect_validator().iter_errors(form):
            yield Problem(
                "form-schema",
                "the form is not a valid JSON Schema: " + _form_message(error),
                pointer("form", "schema", *error.absolute_path),
            )
        return
    if schemas.uses_pattern_properties(form) and "unevaluatedProperties" in json.dumps(form):
        yield Problem(
            "form-schema",
            "unevaluatedProperties cannot be combined with patternProperties in a form "
            "(use additionalProperties)",
            pointer("form", "schema"),
        )
    for path, pattern in _patterns(form, ()):
        try:
            re.compile(pattern)
            regex.compile(pattern)
        except (re.error, regex.error) as exc:
            yield Problem(
                "form-schema",
                f"pattern {pattern!r} is not a regular expression: {exc}",
                pointer("form", "schema", *path),
            )


def _patterns(schema: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield (*path, key), value
            elif key not in ("examples", "default", "const", "enum"):
                yield from _patterns(value, (*path, key))
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _patterns(value, (*path, index))


def _form_message(error: ValidationError) -> str:
    path = list(error.absolute_path)
    where = path[-1] if path else None
    if where == "type" or path[-2:-1] == ["type"]:
        return f"{error.instance!r} is not a JSON Schema type ({_JSON_TYPES})"
    if error.validator == "additionalProperties" and error.validator_value is False:
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = error.schema.get("properties", {})
        hints = [f"'{k}'" + _did_you_mean(k, known) for k in unknown]
        return f"unknown keyword {', '.join(hints)} (see schema/form-schema.json)"
    return f"{where}: {error.message}" if isinstance(where, str) else error.message


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _example_problems(form: dict[str, Any]) -> Iterator[Problem]:
    validator = schemas.form_validator(form)
    examples = form.get("examples") or []
    with schemas.pattern_budget():
        found = [
            (i, e) for i, example in enumerate(examples) for e in validator.iter_errors(example)
        ]
    for index, error in found:
        yield Problem(
            schemas.PATTERN_TIMEOUT_RULE
            if error.validator == schemas.PATTERN_TIMEOUT_RULE
            else "form-example",
            f"example {index} is not valid input: {error.message}",
            pointer("form", "schema", "examples", index, *error.absolute_path),
        )


def _mode_problems(item: dict[str, Any]) -> Iterator[Problem]:
    """The modes an item offers must be ones its actions (or its fallback ticket) can run."""
    fulfillment = item["fulfillment"]
    modes = modes_of(item)
    where = pointer("fulfillment", "modes") if "modes" in fulfillment else pointer("fulfillment")
    if fulfillment["mode"] not in modes:
        yield Problem(
            "fulfillment-mode",
            f"the default mode '{fulfillment['mode']}' is not one of modes ({', '.join(modes)})",
            pointer("fulfillment", "mode"),
        )
    automated = is_automated(item)
    if "automated" in modes and not automated:
        yield Problem(
            "fulfillment-mode",
            "mode automated needs a terraform or rest action; this item has only jira actions",
            where,
        )
    fallback = fulfillment.get("fallback") or {}
    if "manual" in modes and automated and fallback.get("strategy") != "manual":
        yield Problem(
            "fulfillment-mode",
            "mode manual on an item with automated actions opens its fallback ticket: "
            "declare fallback.strategy: manual with its jira",
            pointer("fulfillment", "fallback") if fallback else where,
        )


def _action_problems(item: dict[str, Any], inputs: dict[str, Any] | None) -> Iterator[Problem]:
    fulfillment = item["fulfillment"]
    yield from _mode_problems(item)
    secrets = frozenset((item.get("secrets") or {}).keys())
    # What the resource's earlier requests recorded: any of the item's actions may have run.
    on_resource = {a["name"]: declared_outputs(a) for a in fulfillment["actions"]}
    outputs: dict[str, frozenset[str] | None] = {}
    seen: set[str] = set()
    for index, action in enumerate(fulfillment["actions"]):
        name, kind = action["name"], action["type"]
        if name in seen:
            yield Problem(
                "action-name",
                f"two actions are named '{name}'",
                pointer("fulfillment", "actions", index, "name"),
            )
        if name in RESERVED_NAMES:
            yield Problem(
                "action-name",
                f"'{name}' is reserved for the ticket PAO adds itself "
                f"({' and '.join(sorted(RESERVED_NAMES))} are); rename the action",
                pointer("fulfillment", "actions", index, "name"),
            )
        seen.add(name)
        declared = Declarations(
            inputs=inputs, secrets=secrets, outputs=dict(outputs), resource_outputs=on_resource
        )
        base = ("fulfillment", "actions", index)
        if "when" in action:
            yield from template_problems(action["when"], declared, pointer(*base, "when"))
        yield from _templates_in(action.get(kind), declared, (*base, kind))
        yield from _module_path_problems(action, base)
        when = (action.get("approval") or {}).get("when") or {}
        if "changes" in when and kind != "terraform":
            yield Problem(
                "approval-changes",
                f"approval.when.changes needs a Terraform plan; '{name}' is a {kind} action "
                "(use environments or kinds, or drop it)",
                pointer(*base, "approval", "when", "changes"),
            )
        outputs[name] = declared_outputs(action)
    approval_when = (fulfillment.get("approval") or {}).get("when") or {}
    if "changes" in approval_when:
        yield Problem(
            "approval-changes",
            "approval.when.changes applies to a Terraform action's plan, not to a whole request; "
            "put the approval on the action",
            pointer("fulfillment", "approval", "when", "changes"),
        )
    teardown = (item.get("lifecycle") or {}).get("teardown") or []
    teardown_names = [a["name"] for a in teardown]
    earlier: dict[str, frozenset[str] | None] = {}
    for index, action in enumerate(teardown):
        name, kind = action["name"], action["type"]
        base = ("lifecycle", "teardown", index)
        if name in seen or teardown_names.index(name) != index:
            yield Problem(
                "action-name",
                f"teardown action '{name}' has the name of another action",
                pointer(*base, "name"),
            )
        elif name in RESERVED_NAMES:
            yield Problem(
                "action-name",
                f"'{name}' is reserved for the ticket PAO adds itself "
                f"({' and '.join(sorted(RESERVED_NAMES))} are); rename the teardown action",
                pointer(*base, "name"),
            )
        # A decommission runs the teardown first: `outputs` are the earlier teardown actions',
        # what the resource was made with is `resource.outputs`.
        declared = Declarations(
            inputs=inputs, secrets=secrets, outputs=dict(earlier), resource_outputs=on_resource
        )
        if "when" in action:
            yield from template_problems(action["when"], declared, pointer(*base, "when"))
        yield from _templates_in(action.get(kind), declared, (*base, kind))
        yield from _module_path_problems(action, base)
        earlier[name] = declared_outputs(action)
    fallback = fulfillment.get("fallback") or {}
    if "jira" in fallback:
        # In manual mode the ticket is the request's only action: no earlier outputs exist.
        manual_mode = "manual" in modes_of(item) and is_automated(item)
        declared = Declarations(
            inputs=inputs,
            secrets=secrets,
            outputs={} if manual_mode else dict(outputs),
            resource_outputs=on_resource,
        )
        yield from _templates_in(fallback["jira"], declared, ("fulfillment", "fallback", "jira"))


def _module_path_problems(action: Mapping[str, Any], base: tuple[Any, ...]) -> Iterator[Problem]:
    """A local module is a folder of the catalog: its path may not climb out of it."""
    spec = action.get("terraform") if action["type"] == "terraform" else None
    module = spec.get("module") if isinstance(spec, dict) else None
    if not isinstance(module, str) or module.startswith("git::"):
        return
    path = PurePosixPath(module)
    if path.is_absolute() or ".." in path.parts:
        yield Problem(
            "module-path",
            f"module {module} leaves the catalog; name a folder under modules/ without '..'",
            pointer(*base, "terraform", "module"),
        )


def declared_outputs(action: Mapping[str, Any]) -> frozenset[str]:
    """The outputs an action records: its type's own and those it declares (a REST action's
    poll adds those of its last status answer)."""
    kind = action["type"]
    spec = action.get(kind) or {}
    declared = [*(spec.get("outputs") or []), *((spec.get("poll") or {}).get("outputs") or [])]
    return BUILTIN_OUTPUTS[kind] | frozenset(declared)


def _rest_problems(item: dict[str, Any]) -> Iterator[Problem]:
    """REST actions the schema lets through but that cannot be sent as written."""
    for where in (("fulfillment", "actions"), ("lifecycle", "teardown")):
        for index, action in enumerate(value_at(item, pointer(*where)) or []):
            spec = action.get("rest") if action.get("type") == "rest" else None
            if isinstance(spec, dict):
                yield from _rest_spec_problems(spec, (*where, index, "rest"))


def _rest_spec_problems(spec: dict[str, Any], base: tuple[Any, ...]) -> Iterator[Problem]:
    for name, value in (spec.get("headers") or {}).items():
        if not HTTP_TOKEN.fullmatch(str(name)):
            yield Problem(
                "rest-header",
                f"header name {name!r} is not an HTTP token (letters, digits and "
                "!#$%&'*+.^_`|~- only)",
                pointer(*base, "headers", name),
            )
        elif isinstance(value, str) and ("\r" in value or "\n" in value):
            yield Problem(
                "rest-header",
                f"the value of header {name} contains a line break; a header value is one line "
                "(write it with >- or on one line)",
                pointer(*base, "headers", name),
            )
    url = spec.get("url")
    aws = (spec.get("auth") or {}).get("type") == "aws_sigv4"
    if (
        isinstance(url, str)
        and not url.startswith(("http://", "https://", "{"))
        and not (aws and url.startswith("/"))
    ):
        yield Problem(
            "rest-url",
            "url must be an absolute http(s) URL"
            + ("; a path alone needs auth aws_sigv4" if url.startswith("/") else ""),
            pointer(*base, "url"),
        )
    if "body" in spec and "form" in spec:
        yield Problem(
            "rest-body", "give body or form, not both (form is the body)", pointer(*base, "form")
        )
    poll = spec.get("poll")
    if isinstance(poll, dict):
        given = [k for k in ("url", "url_pointer", "url_header") if k in poll]
        if len(given) != 1:
            yield Problem(
                "rest-poll",
                "poll needs exactly one of url, url_pointer and url_header"
                + (f" (it has {', '.join(given)})" if given else ""),
                pointer(*base, "poll"),
            )


def _templates_in(value: Any, declared: Declarations, path: tuple[Any, ...]) -> Iterator[Problem]:
    if isinstance(value, str):
        yield from template_problems(value, declared, pointer(*path))
    elif isinstance(value, dict):
        for key, sub in value.items():
            if key == "outputs" and path[-1] in ("terraform", "rest", "poll"):
                continue  # output names and JSON pointers, not templates
            yield from _templates_in(sub, declared, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _templates_in(sub, declared, (*path, index))


def template_problems(source: str, declared: Declarations, at: str) -> Iterator[Problem]:
    """Problems of one template, positioned within the template."""
    parsed = parse_template(source)
    if parsed.syntax_error:
        yield Problem(
            "template-syntax",
            f"template syntax error: {parsed.syntax_error}",
            at,
            template_line=parsed.error_line,
            template_column=parsed.error_column,
        )
        return
    for issue in resolve(parsed, declared):
        yield Problem(
            issue.rule, issue.message, at, template_line=issue.line, template_column=issue.column
        )
