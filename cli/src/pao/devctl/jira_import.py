"""`devctl catalog import-jira`: a draft item whose form is the create screen of a JIRA issue type.

JIRA says which fields an issue type's create screen has through createmeta. Jira Data Center
9 and Jira Cloud answer `GET /rest/api/2/issue/createmeta/{project}/issuetypes/{id}` (pages of
fields); older servers only the one-call form `GET /rest/api/2/issue/createmeta?projectKeys=...`,
which Data Center 9 dropped. The project is looked up first (`GET /rest/api/2/project/{key}`), so
a 404 from the newer endpoint can only mean the server lacks it, and the older one is asked.

Each field whose type a form can hold becomes a form field, and the item's ticket passes it on:
summary and description through the action's own templates, the priority by name, other fields
by id in `jira.fields`, each in the shape JIRA's REST API takes it (`{"value": ...}` for a
choice). Fields PAO fills itself, and types without a form equivalent, are reported as skipped,
with the reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from pao.devctl.authoring import (
    BAD_INPUT,
    FIRST_VERSION,
    TICKET_TIMEOUT_SECONDS,
    bad_input,
    category_problem,
    id_problem,
    item_yaml,
    owner_problem,
    validated,
)
from pao.devctl.context import globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit

#: Fields the action sets from its own keys: the project and issue type it names.
SET_BY_ACTION = {
    "project": "the action's jira.project",
    "issuetype": "the action's jira.issue_type",
    "labels": "PAO labels every ticket (pao and the run's own labels); fixed labels go in "
    "jira.labels",
    "components": "PAO sends components by name from jira.components; list the fixed ones there",
    "reporter": "JIRA records PAO's account as the reporter",
}
#: Example values of the draft's form, by JSON Schema type.
EXAMPLES: dict[str, Any] = {"string": "example", "number": 1, "array": ["example"]}
PAGE_SIZE = 50


@dataclass(frozen=True)
class JiraField:
    """One field of a create screen, as createmeta describes it."""

    id: str
    name: str
    required: bool
    type: str
    items: str | None
    allowed: tuple[str, ...]
    default: Any = None

    @classmethod
    def of(cls, field_id: str, meta: dict[str, Any]) -> JiraField:
        schema = meta.get("schema") or {}
        allowed = tuple(
            str(v.get("value") or v.get("name"))
            for v in meta.get("allowedValues") or []
            if isinstance(v, dict) and (v.get("value") or v.get("name")) and not v.get("disabled")
        )
        default = meta.get("defaultValue") if meta.get("hasDefaultValue") else None
        if isinstance(default, dict):
            default = default.get("value") or default.get("name")
        return cls(
            field_id,
            str(meta.get("name") or field_id),
            bool(meta.get("required")),
            str(schema.get("type") or "any"),
            schema.get("items"),
            allowed,
            default,
        )


@dataclass(frozen=True)
class Mapped:
    """A JIRA field mirrored by a form field."""

    field: JiraField
    input: str
    schema: dict[str, Any]

    @property
    def value(self) -> str:
        """The template handing the input to JIRA in the shape its REST API takes."""
        ref = f"inputs.{self.input}"
        if self.field.type == "option":
            shaped = f"{{'value': {ref}}}"
            return (
                f"{{{{ {shaped} }}}}"
                if self.field.required
                else f"{{{{ {shaped} if {ref} is defined else none }}}}"
            )
        return f"{{{{ {ref} }}}}" if self.field.required else f"{{{{ {ref} | default(none) }}}}"

    @property
    def text(self) -> str:
        ref = f"inputs.{self.input}"
        return f"{{{{ {ref} }}}}" if self.field.required else f"{{{{ {ref} | default('') }}}}"


@dataclass(frozen=True)
class Skipped:
    field: JiraField
    reason: str


def form_schema(field: JiraField) -> dict[str, Any] | str:
    """The JSON Schema of a form field mirroring `field`, or why it has none."""
    described = {"title": field.name, "description": f"JIRA field {field.id} ({field.type})."}
    if field.type == "string":
        schema: dict[str, Any] = {"type": "string"}
        if field.id == "summary":
            schema["maxLength"] = 255
    elif field.type == "number":
        schema = {"type": "number"}
    elif field.type in ("option", "priority"):
        if not field.allowed:
            return f"JIRA lists no allowed values for this {field.type} field"
        schema = {"type": "string", "enum": list(field.allowed)}
    elif field.type == "date":
        schema = {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
    elif field.type == "array" and field.items in (None, "string"):
        schema = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    elif field.type == "array":
        return (
            f"a list of {field.items} values: JIRA takes each as an object, which the action's "
            "templates cannot build from a list; add it to jira.fields by hand"
        )
    else:
        return f"JIRA type {field.type} has no form equivalent (string, number, option, array)"
    if field.default is not None and field.default in field.allowed:
        schema["default"] = field.default
    return described | schema


def input_name(field: JiraField, taken: set[str]) -> str:
    """A snake_case form field name after the JIRA field's name (or id), unique in the form."""
    base = re.sub(r"[^a-z0-9]+", "_", field.name.lower())[:50].strip("_")
    if not re.match(r"^[a-z]", base):
        base = re.sub(r"[^a-z0-9]+", "_", field.id.lower())[:50].strip("_")
    name = base
    suffix = re.sub(r"\D", "", field.id) or str(len(taken))
    while name in taken:
        name = f"{base}_{suffix}"
        suffix += "_1"
    taken.add(name)
    return name


def sort_fields(
    fields: list[JiraField], skip: set[str]
) -> tuple[list[Mapped], list[Skipped], list[Skipped]]:
    """The fields a form mirrors, those the action sets itself, and those skipped (with why)."""
    mapped: list[Mapped] = []
    by_action: list[Skipped] = []
    skipped: list[Skipped] = []
    taken: set[str] = set()
    # Summary first: the form leads with what the ticket will be called.
    for field in sorted(fields, key=lambda f: (f.id != "summary", not f.required)):
        if field.id in SET_BY_ACTION:
            by_action.append(Skipped(field, SET_BY_ACTION[field.id]))
            continue
        if field.id.lower() in skip or field.name.lower() in skip:
            skipped.append(Skipped(field, "skipped with --skip"))
            continue
        if "correlation id" in field.name.lower():
            skipped.append(Skipped(field, "PAO writes the request's correlation id there itself"))
            continue
        schema = form_schema(field)
        if isinstance(schema, str):
            skipped.append(Skipped(field, schema))
        else:
            mapped.append(Mapped(field, input_name(field, taken), schema))
    return mapped, by_action, skipped


def draft_item(
    *,
    item_id: str,
    name: str,
    category: str,
    owner: str,
    project: dict[str, Any],
    issue_type: str,
    mapped: list[Mapped],
) -> dict[str, Any]:
    """An item whose form is `mapped` and whose one action opens the issue type in the project."""
    by_id = {m.field.id: m for m in mapped}
    summary = by_id.get("summary")
    description = by_id.get("description")
    others = [m for m in mapped if m.field.id not in ("summary", "description", "priority")]
    rows = [
        f"| {m.field.name} | {m.text} |"
        for m in mapped
        if m.field.id not in ("summary", "description")
    ]
    table = "\n".join(["|| Field || Value ||", *rows]) if rows else ""
    ticket: dict[str, Any] = {
        "project": project["key"],
        "issue_type": issue_type,
        "summary": summary.text if summary else f"{name} for {{{{ user.name }}}}",
        "description": "\n\n".join(
            part
            for part in (
                description.text if description else "",
                table,
                "Requested by {{ user.name }} through PAO, request {{ request.id }}.",
            )
            if part
        )
        + "\n",
        "labels": ["pao", item_id],
    }
    if "priority" in by_id:
        # By name; an empty priority is left to JIRA's default.
        ticket["priority"] = by_id["priority"].text
    fields = {m.field.id: m.value for m in others}
    if fields:
        ticket["fields"] = fields
    form = {
        "type": "object",
        "additionalProperties": False,
        "required": [m.input for m in mapped if m.field.required],
        "properties": {m.input: m.schema for m in mapped},
        "examples": [{m.input: _example(m) for m in mapped}],
    }
    if not form["required"]:
        del form["required"]
    return {
        "apiVersion": "pao.dev/v1",
        "kind": "CatalogItem",
        "metadata": {
            "id": item_id,
            "name": name,
            "category": category,
            "owner": owner,
            "version": FIRST_VERSION,
            "description": (
                f"Opens a {issue_type} in JIRA project {project['key']} "
                f"({project.get('name') or project['key']}) with the fields of its create screen."
            ),
        },
        "form": {"order": [m.input for m in mapped], "schema": form},
        "fulfillment": {
            "mode": "manual",
            "actions": [
                {
                    "name": "create_ticket",
                    "type": "jira",
                    "timeout_seconds": TICKET_TIMEOUT_SECONDS,
                    "jira": ticket,
                }
            ],
        },
    }


def _example(mapped: Mapped) -> Any:
    schema = mapped.schema
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("format") == "date":
        return "2027-01-31"
    if mapped.field.id == "summary":
        return f"{mapped.field.name} of an example request"
    return EXAMPLES[schema["type"]]


class JiraReader:
    """The few JIRA REST v2 reads an import needs; every failure becomes a CliError."""

    def __init__(self, url: str, *, user: str | None, token: str | None) -> None:
        import httpx

        self.url = url.rstrip("/")
        auth: Any = None
        headers = {"Accept": "application/json"}
        if user and token:
            auth = httpx.BasicAuth(user, token)
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, auth=auth, headers=headers, timeout=30)

    def close(self) -> None:
        self._http.close()

    def get(
        self, path: str, params: dict[str, Any] | None = None, *, missing_ok: bool = False
    ) -> Any:
        """The JSON answer of `GET path`; None for a 404 when `missing_ok`."""
        import httpx

        try:
            answer = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise CliError(
                BAD_INPUT,
                f"cannot reach JIRA at {self.url}: {type(exc).__name__} ({exc})",
                "Check --url and that JIRA answers from this machine",
            ) from None
        if answer.status_code == 404 and missing_ok:
            return None
        if answer.status_code in (401, 403):
            raise CliError(
                BAD_INPUT,
                f"JIRA at {self.url} refused GET {path} ({answer.status_code})",
                "Check --user and the token in the variable --token-env names, and that this "
                "account may browse the project",
                status=answer.status_code,
            )
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code >= 400 or body is None:
            said = (
                "; ".join((body or {}).get("errorMessages") or []) if isinstance(body, dict) else ""
            )
            raise CliError(
                BAD_INPUT,
                f"JIRA at {self.url} answered GET {path} with {answer.status_code}"
                + (f": {said}" if said else " and no JSON"),
                "Check --url: it is JIRA's base URL, e.g. https://jira.example.com",
                status=answer.status_code,
            )
        return body

    def project(self, key: str) -> dict[str, Any]:
        project = self.get(f"/rest/api/2/project/{quote(key)}", missing_ok=True)
        if project is None:
            known = self.get("/rest/api/2/project", missing_ok=True) or []
            keys = ", ".join(sorted(p.get("key", "?") for p in known)) or "none you may see"
            raise CliError(
                BAD_INPUT,
                f"JIRA at {self.url} has no project {key}",
                f"Pass one of its projects as --project: {keys}",
                details=[{"field": "--project", "message": f"no project {key}"}],
                exit_code=2,
            )
        return dict(project)

    def create_fields(self, project: dict[str, Any], issue_type: dict[str, Any]) -> list[JiraField]:
        """The create screen's fields of an issue type in a project."""
        key = quote(project["key"])
        path = f"/rest/api/2/issue/createmeta/{key}/issuetypes/{quote(str(issue_type['id']))}"
        fields: list[JiraField] = []
        start = 0
        while True:
            page = self.get(path, {"startAt": start, "maxResults": PAGE_SIZE}, missing_ok=True)
            if page is None:
                return self._legacy_fields(project, issue_type)
            values = page.get("values") or []
            fields += [JiraField.of(str(v.get("fieldId")), v) for v in values]
            start += len(values)
            if page.get("isLast", True) or not values:
                return fields

    def _legacy_fields(
        self, project: dict[str, Any], issue_type: dict[str, Any]
    ) -> list[JiraField]:
        meta = self.get(
            "/rest/api/2/issue/createmeta",
            {
                "projectKeys": project["key"],
                "issuetypeNames": issue_type["name"],
                "expand": "projects.issuetypes.fields",
            },
        )
        for listed in meta.get("projects") or []:
            if listed.get("key") != project["key"]:
                continue
            for listed_type in listed.get("issuetypes") or []:
                if listed_type.get("name") == issue_type["name"]:
                    return [
                        JiraField.of(i, m) for i, m in (listed_type.get("fields") or {}).items()
                    ]
        raise CliError(
            BAD_INPUT,
            f"JIRA shows no create screen of {issue_type['name']} in {project['key']} to this "
            "account",
            "Check that the account may create issues in the project",
        )


def _issue_type(project: dict[str, Any], wanted: str) -> dict[str, Any]:
    types = [t for t in project.get("issueTypes") or [] if not t.get("subtask")]
    for issue_type in types:
        if str(issue_type.get("name", "")).lower() == wanted.lower():
            return dict(issue_type)
    names = ", ".join(str(t.get("name")) for t in types) or "none"
    raise CliError(
        BAD_INPUT,
        f"project {project['key']} has no issue type {wanted}",
        f"Pass one of its issue types as --issue-type: {names}",
        details=[{"field": "--issue-type", "message": f"no issue type {wanted}"}],
        exit_code=2,
    )


def _token(variable: str | None, user: str | None) -> str | None:
    if variable is None:
        if user:
            raise bad_input(
                "--token-env",
                "--user needs a token",
                "Put the API token in an environment variable and name it with --token-env",
            )
        return None
    token = os.environ.get(variable)
    if not token:
        raise bad_input(
            "--token-env",
            f"the environment variable {variable} is not set or empty",
            f"Export the JIRA API token as {variable} first",
        )
    return token


def import_jira(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="JIRA's base URL, e.g. https://jira.example.com.")],
    project_key: Annotated[str, typer.Option("--project", help="The project key, e.g. DBA.")],
    issue_type_name: Annotated[
        str, typer.Option("--issue-type", help="The issue type, e.g. Task.")
    ],
    user: Annotated[
        str | None, typer.Option(help="The JIRA account (with --token-env: basic auth).")
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option(
            "--token-env",
            help="The environment variable holding the API token (a bearer token without "
            "--user). Never pass the token itself.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="The draft's file; default ./<id>.yaml.")
    ] = None,
    item_id: Annotated[
        str | None, typer.Option("--id", help="The item's id; default <project>-<issue type>.")
    ] = None,
    category: Annotated[
        str, typer.Option(help="The item's category (one of the schema's).")
    ] = "compute",
    owner: Annotated[
        str | None, typer.Option(help="The owning team; default team-<project>.")
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help="A JIRA field (id or name) to leave out. Repeatable."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Draft an item from the create screen of a JIRA issue type.

    The screen's fields become the form, and the item's ticket opens that issue type in that
    project with them. Prints what was mapped and what was skipped, and why.

    Examples:

      devctl catalog import-jira --url https://jira.example.com --project DBA --issue-type Task

      JIRA_TOKEN=... devctl catalog import-jira --url https://example.atlassian.net
        --project DBA --issue-type "Database request" --user me@example.com --token-env JIRA_TOKEN
    """
    g = globals_of(ctx)
    if not re.match(r"^https?://[^/\s]+", url):
        raise bad_input("--url", f"'{url}' is not an http(s) URL", "Pass JIRA's base URL")
    slug = re.sub(r"[^a-z0-9]+", "-", f"{project_key}-{issue_type_name}".lower()).strip("-")
    item_id = item_id or slug
    owner = owner or "team-" + re.sub(r"[^a-z0-9]+", "-", project_key.lower()).strip("-")
    for flag, why in (
        ("--id", id_problem(item_id)),
        ("--category", category_problem(category)),
        ("--owner", owner_problem(owner)),
    ):
        if why:
            raise bad_input(flag, why, f"Pass another {flag}")
    target = out or Path(f"{item_id}.yaml")
    if target.exists() and not force:
        raise bad_input(
            "--out", f"{target} already exists", "Pass --force to replace it, or another --out"
        )
    reader = JiraReader(url, user=user, token=_token(token_env, user))
    try:
        project = reader.project(project_key)
        issue_type = _issue_type(project, issue_type_name)
        fields = reader.create_fields(project, issue_type)
    finally:
        reader.close()
    mapped, by_action, skipped = sort_fields(fields, {s.lower() for s in skip or []})
    if not mapped:
        raise CliError(
            BAD_INPUT,
            f"no field of the create screen of {issue_type['name']} can be a form field",
            "See the skipped fields above; write the form by hand from templates/",
        )
    name = f"{project.get('name') or project['key']}: {issue_type['name']}"[:80]
    item = draft_item(
        item_id=item_id,
        name=name if len(name) >= 3 else f"{name} item",
        category=category,
        owner=owner,
        project=project,
        issue_type=str(issue_type["name"]),
        mapped=mapped,
    )
    text = item_yaml(
        item,
        [
            f"A draft from the create screen of {issue_type['name']} in JIRA project "
            f"{project['key']} ({reader.url}).",
            "Check the form's titles, help texts and example, then move the file to",
            f"<catalog>/{category}/{item_id}.yaml.",
            "yaml-language-server: $schema=../schema/catalog-item.json",
        ],
    )
    validated(text, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    report = {
        "file": str(target),
        "valid": True,
        "mapped": [
            {
                "field": m.input,
                "jira_field": m.field.id,
                "jira_type": m.field.type,
                "type": m.schema["type"],
                "required": m.field.required,
            }
            for m in mapped
        ],
        "set_by_action": [{"jira_field": s.field.id, "reason": s.reason} for s in by_action],
        "skipped": [
            {
                "jira_field": s.field.id,
                "name": s.field.name,
                "jira_type": s.field.type,
                "reason": s.reason,
            }
            for s in skipped
        ],
    }
    if g.output is not OutputFormat.table:
        emit(report, g.output)
        return
    emit(
        None,
        g.output,
        title=f"{project['key']} / {issue_type['name']}: {len(mapped)} field(s) mapped",
        columns=["form field", "JIRA field", "JIRA type", "type", "required"],
        rows=[
            (m.input, m.field.id, m.field.type, m.schema["type"], m.field.required) for m in mapped
        ],
    )
    for s in by_action:
        console.print(
            f"set by the action: {s.field.id}: {s.reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for s in skipped:
        console.print(
            f"skipped: {s.field.id} ({s.field.name}, {s.field.type}): {s.reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"{target}: written, valid", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"next: devctl test template {target}; review the form, then move the file to "
        f"<catalog>/{category}/{item_id}.yaml",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
