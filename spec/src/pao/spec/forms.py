"""Forms: validating a request's inputs, and describing the form a UI or terminal should show.

Which fields a requester sees depends on what they already entered: a field declared only inside
an `if`/`then` branch appears while that branch applies; a field a branch forbids
(`not: {required: [field]}`) disappears while it applies. Required fields are the top-level ones
plus those of every branch that applies and of `dependentRequired` entries whose trigger is set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from jsonschema.exceptions import ValidationError

from pao.spec import schemas
from pao.spec.problems import Problem, pointer
from pao.spec.rendering import apply_defaults

CONSTRAINT_KEYWORDS = (
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "const",
)


@dataclass
class FormField:
    """One field as a form shows it."""

    name: str
    type: str
    label: str
    help: str | None
    required: bool
    visible: bool
    default: Any = None
    enum: list[Any] | None = None
    constraints: dict[str, Any] = field(default_factory=dict)
    value: Any = None
    conditional: bool = False


@dataclass
class FormDescription:
    """The whole form given some inputs: fields in order, and what is wrong so far."""

    fields: list[FormField]
    problems: list[Problem]

    @property
    def complete(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": [asdict(f) for f in self.fields],
            "complete": self.complete,
            "problems": [p.as_dict() for p in self.problems],
        }


def input_problems(form_schema: Mapping[str, Any], inputs: Any) -> list[Problem]:
    """Every way `inputs` breaks the form, each with a JSON pointer under /inputs."""
    validator = schemas.form_validator(form_schema)  # type: ignore[arg-type]
    with schemas.pattern_budget():
        problems = [_problem(error) for error in validator.iter_errors(inputs)]
    return sorted(dict.fromkeys(problems), key=lambda p: p.pointer)


def _problem(error: ValidationError) -> Problem:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return Problem(
            "input", f"{missing} is required" + _why(error), pointer("inputs", *path, missing)
        )
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        extra = sorted(set(error.instance) - set(error.schema.get("properties") or {}))
        name = extra[0] if extra else ""
        return Problem(
            "input",
            f"{name} is not a field of this form" + _why(error),
            pointer("inputs", *path, name),
        )
    if error.validator == "not" and isinstance(error.validator_value, dict):
        forbidden = error.validator_value.get("required") or []
        if forbidden:
            return Problem(
                "input",
                f"{forbidden[0]} must be left empty" + _why(error),
                pointer("inputs", *path, forbidden[0]),
            )
    if error.validator == schemas.PATTERN_TIMEOUT_RULE:
        return Problem(schemas.PATTERN_TIMEOUT_RULE, error.message, pointer("inputs", *path))
    if error.validator == "const":
        return Problem(
            "input",
            f"must be {json.dumps(error.validator_value)}" + _why(error),
            pointer("inputs", *path),
        )
    return Problem("input", error.message, pointer("inputs", *path))


def _why(error: ValidationError) -> str:
    """For an error raised by a conditional branch, the condition that made it apply."""
    schema_path = list(error.schema_path)
    if "then" not in schema_path and "else" not in schema_path:
        return ""
    return " (a condition of the form applies)"


# --- describing the form -----------------------------------------------------------------------


@dataclass
class _Branch:
    schema: Mapping[str, Any]
    active: bool


def _branches(form: Mapping[str, Any], values: Mapping[str, Any]) -> Iterator[_Branch]:
    holders = [form, *(form.get("allOf") or [])]
    for holder in holders:
        if not isinstance(holder, Mapping) or "if" not in holder:
            continue
        matches = schemas.form_validator(dict(holder["if"])).is_valid(values)
        if isinstance(holder.get("then"), Mapping):
            yield _Branch(holder["then"], matches)
        if isinstance(holder.get("else"), Mapping):
            yield _Branch(holder["else"], not matches)
    for trigger, schema in (form.get("dependentSchemas") or {}).items():
        if isinstance(schema, Mapping):
            yield _Branch(schema, trigger in values)


def _forbidden(branch: Mapping[str, Any]) -> set[str]:
    names = set()
    negated = branch.get("not")
    if isinstance(negated, Mapping):
        names.update(negated.get("required") or [])
    for name, prop in (branch.get("properties") or {}).items():
        if prop is False:
            names.add(name)
    return names


def _resolve(prop: Any) -> dict[str, Any]:
    """A property schema with a `$ref` to the common types merged in."""
    if not isinstance(prop, Mapping):
        return {}
    ref = prop.get("$ref")
    if not ref:
        return dict(prop)
    resolved = schemas.registry().resolver().lookup(ref).contents
    return {**dict(resolved), **{k: v for k, v in prop.items() if k != "$ref"}}


def _type_of(prop: Mapping[str, Any]) -> str:
    kind = prop.get("type")
    if isinstance(kind, list):
        return "|".join(kind)
    if kind:
        return str(kind)
    if "enum" in prop:
        return "enum"
    if "const" in prop:
        return type(prop["const"]).__name__
    return "any"


def describe_form(
    form: Mapping[str, Any], inputs: Mapping[str, Any], *, order: list[str] | None = None
) -> FormDescription:
    """The form's fields in order, with what is visible and required given `inputs`."""
    values = apply_defaults(form, inputs)
    with schemas.pattern_budget():
        branches = list(_branches(form, values))
    active = [b for b in branches if b.active]
    top = dict(form.get("properties") or {})
    declared: dict[str, dict[str, Any]] = {name: _resolve(p) for name, p in top.items()}
    branch_only: dict[str, bool] = {}
    for branch in branches:
        for name, prop in (branch.schema.get("properties") or {}).items():
            if name not in top and prop is not False:
                declared.setdefault(name, _resolve(prop))
                branch_only[name] = branch_only.get(name, False) or branch.active
    required = set(form.get("required") or [])
    forbidden: set[str] = set()
    for branch in active:
        required.update(branch.schema.get("required") or [])
        forbidden |= _forbidden(branch.schema)
        for name, prop in (branch.schema.get("properties") or {}).items():
            if name in declared and isinstance(prop, Mapping):
                declared[name] = {**declared[name], **_resolve(prop)}
    for trigger, needs in (form.get("dependentRequired") or {}).items():
        if trigger in values:
            required.update(needs)
    names = [n for n in (order or []) if n in declared]
    names += [n for n in declared if n not in names]
    fields = []
    for name in names:
        prop = declared[name]
        visible = branch_only.get(name, name not in forbidden)
        fields.append(
            FormField(
                name=name,
                type=_type_of(prop),
                label=str(prop.get("title") or name.replace("_", " ").capitalize()),
                help=prop.get("description"),
                required=visible and name in required,
                visible=visible,
                default=prop.get("default"),
                enum=list(prop["enum"]) if "enum" in prop else None,
                constraints={k: prop[k] for k in CONSTRAINT_KEYWORDS if k in prop},
                value=inputs.get(name),
                conditional=name in branch_only,
            )
        )
    return FormDescription(fields, input_problems(form, dict(inputs)))
