"""`devctl catalog new`: start a catalog item (and its Terraform module) that validates as written.

The item follows the shape of the catalog's templates (`catalog/templates/`): metadata, a form
with one complete example, and one action of the chosen type. An automated item also gets the
manual fallback ticket every automated item of the catalog has, and a REST item a teardown, so
that a decommission undoes what the item made. The file is checked with the validation of
`devctl validate catalog-item` before anything is written: a command that refuses leaves the
catalog as it was.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pao.devctl.context import globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, console, emit, err_console

BAD_INPUT = "PAO-CLI-004"
INVALID_ITEM = "PAO-VAL-001"
FIELD_TYPES = ("string", "integer", "boolean", "enum")
#: A JIRA project key, as JIRA allows it by default.
PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{1,9}$")
#: Two weeks: how long a ticket may stay open before its action fails, as the templates use.
TICKET_TIMEOUT_SECONDS = 1_209_600
FIRST_VERSION = "0.1.0"


class ActionType(StrEnum):
    jira = "jira"
    terraform = "terraform"
    rest = "rest"


@dataclass(frozen=True)
class FormField:
    """One field of the form being written."""

    name: str
    type: str
    required: bool = False
    description: str = ""
    choices: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        """The field's JSON Schema in the form."""
        prop: dict[str, Any] = {"title": self.name.replace("_", " ").capitalize()}
        if self.description:
            prop["description"] = self.description
        if self.type == "enum":
            prop |= {"type": "string", "enum": list(self.choices)}
        else:
            prop["type"] = self.type
        return prop

    def example(self) -> Any:
        """A value the field accepts, for the form's example."""
        return {"string": "example", "integer": 1, "boolean": False}.get(
            self.type, self.choices[0] if self.choices else None
        )

    @property
    def value(self) -> str:
        """The template passing the field on with its type; an optional field left empty is null."""
        return (
            f"{{{{ inputs.{self.name} }}}}"
            if self.required
            else f"{{{{ inputs.{self.name} | default(none) }}}}"
        )

    @property
    def text(self) -> str:
        """The template showing the field in a ticket; an optional one left empty shows nothing."""
        return (
            f"{{{{ inputs.{self.name} }}}}"
            if self.required
            else f"{{{{ inputs.{self.name} | default('') }}}}"
        )


def parse_field(spec: str) -> FormField:
    """`name:type[:required|optional][:description]`; an enum lists its values: `enum=a,b`."""
    name, _, rest = spec.partition(":")
    kind, _, rest = rest.partition(":")
    flag, _, description = rest.partition(":")
    if flag and flag not in ("required", "optional"):
        description, flag = rest, ""
    kind, _, values = kind.partition("=")
    choices = tuple(v.strip() for v in values.split(",") if v.strip())
    return checked_field(
        FormField(name.strip(), kind.strip(), flag == "required", description.strip(), choices)
    )


def checked_field(field: FormField) -> FormField:
    """The field, or a ValueError saying what is wrong with it."""
    if not re.fullmatch(common_pattern("snake-name"), field.name):
        raise ValueError(
            f"field name '{field.name}' is not snake_case (lower-case words joined by _)"
        )
    if field.type not in FIELD_TYPES:
        raise ValueError(f"field type '{field.type}' is not one of {', '.join(FIELD_TYPES)}")
    if field.type == "enum" and not field.choices:
        raise ValueError(f"enum field '{field.name}' needs its values, e.g. {field.name}:enum=a,b")
    if field.type == "enum" and len(set(field.choices)) != len(field.choices):
        raise ValueError(f"enum field '{field.name}' repeats a value")
    if field.type != "enum" and field.choices:
        raise ValueError(f"only an enum field takes values (=...); '{field.name}' is {field.type}")
    return field


def common_pattern(name: str) -> str:
    """A pattern of the catalog schema's common types (kebab-id, team-id, snake-name...)."""
    from pao.spec.schemas import load_schemas

    pattern: str = load_schemas()["common-types.json"]["$defs"][name]["pattern"]
    return pattern


def id_problem(item_id: str) -> str | None:
    """Why `item_id` cannot be an item's id, or None."""
    from pao.spec.schemas import load_schemas

    rule = load_schemas()["common-types.json"]["$defs"]["kebab-id"]
    if not rule["minLength"] <= len(item_id) <= rule["maxLength"] or not re.fullmatch(
        rule["pattern"], item_id
    ):
        return (
            f"'{item_id}' is not an item id: {rule['minLength']}-{rule['maxLength']} characters, "
            "lower-case words joined by single dashes, starting with a letter (e.g. redis-cache)"
        )
    return None


def owner_problem(owner: str) -> str | None:
    if re.fullmatch(common_pattern("team-id"), owner):
        return None
    return f"'{owner}' is not a team id: team-<name>, lower-case (e.g. team-data)"


def category_problem(category: str) -> str | None:
    from pao.spec.catalog import categories

    if category in categories():
        return None
    return f"'{category}' is not a category; the schema allows {', '.join(categories())}"


def bad_input(flag: str, message: str, suggestion: str) -> CliError:
    """Refused input, naming the flag at fault."""
    named = message if message.startswith(flag) else f"{flag}: {message}"
    return CliError(
        BAD_INPUT, named, suggestion, details=[{"field": flag, "message": message}], exit_code=2
    )


def find_catalog(start: Path) -> Path:
    """The catalog folder `start` is in or holds (the one with schema/catalog-item.json), else
    ./catalog."""
    for folder in (start, *start.parents):
        for candidate in (folder, folder / "catalog"):
            if (candidate / "schema" / "catalog-item.json").is_file():
                return candidate
    return start / "catalog"


class _ItemDumper(yaml.SafeDumper):
    """YAML as the catalog's files are written: keys in order, lists indented under their key,
    lists of plain values on one line, multi-line text as blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    plain = all(isinstance(v, str | int | float | bool) and "\n" not in str(v) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=plain)


_ItemDumper.add_representer(str, _text)
_ItemDumper.add_representer(list, _list)


def item_yaml(item: dict[str, Any], header: Iterable[str]) -> str:
    """The item as YAML, under comment lines."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header)
    body = yaml.dump(
        item, Dumper=_ItemDumper, sort_keys=False, allow_unicode=True, width=100, indent=2
    )
    # A blank line before each top-level section, as the catalog's files have.
    body = re.sub(r"\n(?=(form|fulfillment|secrets|lifecycle):)", "\n\n", body)
    return comments + body


def validated(text: str, path: Path) -> None:
    """Check an item's text with `devctl validate catalog-item`'s rules; refuse it when invalid."""
    from pao.spec.validation import validate_text

    problems = validate_text(text, str(path)).problems
    if problems:
        raise CliError(
            INVALID_ITEM,
            f"{path} would not be a valid item: {problems[0].message}",
            "Nothing was written; change the values named above and run the command again",
            details=[{"field": p.pointer or None, "message": p.message} for p in problems],
        )


def ticket_table(fields: Iterable[FormField]) -> str:
    """A JIRA wiki table of the request's inputs, one row per field."""
    rows = [f"| {f.schema()['title']} | {f.text} |" for f in fields]
    return "\n".join(["|| Field || Value ||", *rows])


def build_item(
    *,
    item_id: str,
    name: str,
    category: str,
    owner: str,
    description: str,
    fields: list[FormField],
    action: ActionType,
    project: str,
    issue_type: str,
    url: str,
) -> dict[str, Any]:
    """The item's document: metadata, form, fulfilment for the action type chosen."""
    table = ticket_table(fields)
    signed = "Requested by {{ user.name }} through PAO, request {{ request.id }}."
    first = next((f for f in fields if f.required), None)
    summary = f"{name}: {first.text}" if first else f"{name} for {{{{ user.name }}}}"
    item: dict[str, Any] = {
        "apiVersion": "pao.dev/v1",
        "kind": "CatalogItem",
        "metadata": {
            "id": item_id,
            "name": name,
            "category": category,
            "owner": owner,
            "version": FIRST_VERSION,
            "description": description,
            "support": {"channel": f"#{owner}"},
        },
        "form": {
            "order": [f.name for f in fields],
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "required": [f.name for f in fields if f.required],
                "properties": {f.name: f.schema() for f in fields},
                "examples": [{f.name: f.example() for f in fields}],
            },
        },
    }
    if not item["form"]["schema"]["required"]:
        del item["form"]["schema"]["required"]
    ticket = {
        "project": project,
        "issue_type": issue_type,
        "summary": summary,
        "description": f"Please provide {name} for {{{{ user.name }}}}.\n\n{table}\n\n{signed}\n",
        "labels": ["pao", item_id],
    }
    if action is ActionType.jira:
        item["fulfillment"] = {
            "mode": "manual",
            "actions": [
                {
                    "name": "create_ticket",
                    "type": "jira",
                    "timeout_seconds": TICKET_TIMEOUT_SECONDS,
                    "jira": ticket,
                }
            ],
        }
        return item
    fallback = {
        **ticket,
        "summary": f"{name}: {{{{ request.kind }}}} by hand (request {{{{ request.id }}}})",
        "description": (
            f"PAO could not {{{{ request.kind }}}} this automatically; please do it by hand.\n\n"
            f"{table}\n\n{signed}\n"
        ),
        "labels": ["pao", item_id, "fallback"],
    }
    item["fulfillment"] = {
        "mode": "automated",
        "modes": ["automated", "manual"],
        "fallback": {"strategy": "manual", "jira": fallback},
        "actions": [_automated_action(action, item_id, fields, url)],
    }
    if action is ActionType.rest:
        item["secrets"] = {
            "api_token": {
                "path": f"/pao/{item_id}/api-token",
                "description": "The token PAO calls the API with.",
            }
        }
        item["lifecycle"] = {
            "teardown": [
                {
                    "name": "delete",
                    "type": "rest",
                    "rest": {
                        "method": "DELETE",
                        "url": url.rstrip("/") + "/{{ resource.outputs.create.id }}",
                        "auth": {"type": "bearer", "token": "{{ secrets.api_token }}"},
                        "success": {"status": [200, 202, 204, 404]},
                    },
                }
            ]
        }
    return item


def _automated_action(
    action: ActionType, item_id: str, fields: list[FormField], url: str
) -> dict[str, Any]:
    values = {f.name: f.value for f in fields}
    if action is ActionType.terraform:
        return {
            "name": "provision",
            "type": "terraform",
            "timeout_seconds": 1800,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 10},
            "terraform": {"module": f"modules/{item_id}", "variables": values, "outputs": ["id"]},
        }
    return {
        "name": "create",
        "type": "rest",
        "retry": {"max_attempts": 3, "initial_backoff_seconds": 2},
        "rest": {
            "method": "POST",
            "url": url,
            "auth": {"type": "bearer", "token": "{{ secrets.api_token }}"},
            "body": values,
            "outputs": {"id": "/id"},
        },
    }


_TF_TYPES = {"string": "string", "integer": "number", "boolean": "bool", "enum": "string"}


def module_files(item_id: str, name: str, fields: list[FormField]) -> dict[str, str]:
    """A Terraform module of built-in resources only, taking the form's fields as variables."""
    resource = item_id.replace("-", "_")
    width = max(len(f.name) for f in fields)
    inputs = "\n".join(f"    {f.name:<{width}} = var.{f.name}" for f in fields)
    checks = "".join(
        "\n    precondition {\n"
        f"      condition     = {_choice_condition(f)}\n"
        f'      error_message = "{f.name} must be one of {_hcl(", ".join(f.choices))}."\n'
        "    }"
        for f in fields
        if f.type == "enum"
    )
    lifecycle = f"\n\n  lifecycle {{{checks}\n  }}" if checks else ""
    main = (
        f"# {name}: what a request of {item_id} makes. Only Terraform's built-in resources, so\n"
        "# the module plans and applies anywhere; replace terraform_data with the resources of\n"
        "# the provider that does the work. Enum values are checked by preconditions rather\n"
        "# than variable validations: Terraform records one result per resource, so an apply\n"
        "# that changes nothing writes no new state.\n"
        "terraform {\n"
        '  required_version = ">= 1.4"\n'
        "}\n\n"
        f'resource "terraform_data" "{resource}" {{\n'
        f"  input = {{\n{inputs}\n  }}{lifecycle}\n}}\n"
    )
    variables = "\n".join(_variable(f) for f in fields)
    outputs = (
        f'output "id" {{\n  description = "The id of what was made; PAO records it as '
        f'outputs.provision.id."\n  value       = terraform_data.{resource}.id\n}}\n'
    )
    return {"main.tf": main, "variables.tf": variables, "outputs.tf": outputs}


def _hcl(text: str) -> str:
    """Text inside an HCL string: quotes and backslashes escaped, no interpolation."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.replace("${", "$${").replace("%{", "%%{")


def _choice_condition(field: FormField) -> str:
    choices = ", ".join(f'"{_hcl(c)}"' for c in field.choices)
    check = f"contains([{choices}], var.{field.name})"
    return check if field.required else f"var.{field.name} == null ? true : {check}"


def _variable(field: FormField) -> str:
    description = _hcl(field.description or field.schema()["title"])
    default = "" if field.required else "  default     = null\n"
    return (
        f'variable "{field.name}" {{\n'
        f'  description = "{description}"\n'
        f"  type        = {_TF_TYPES[field.type]}\n{default}}}\n"
    )


class Questions:
    """Each value from its flag, else asked on the terminal (re-asked until it fits), else, with
    --yes, its default; a required value without flag or default is refused under --yes."""

    def __init__(self, *, ask: bool) -> None:
        self.ask = ask

    def value(
        self,
        given: str | None,
        *,
        flag: str,
        question: str,
        problem: Callable[[str], str | None] = lambda _: None,
        default: str | None = None,
        choices: Iterable[str] | None = None,
    ) -> str:
        if given is not None:
            why = problem(given)
            if why:
                raise bad_input(flag, why, f"Pass another {flag}")
            return given
        if not self.ask:
            if default is not None:
                return default
            raise bad_input(
                flag,
                f"{flag} is needed with --yes",
                f"Pass {flag}, or leave out --yes to be asked",
            )
        allowed = list(choices or [])
        if allowed:
            question += f" ({', '.join(allowed)})"
        while True:
            answer: str = typer.prompt(question, default=default, type=str)
            why = problem(answer.strip())
            if not why and allowed and answer.strip() not in allowed:
                why = f"'{answer.strip()}' is not one of {', '.join(allowed)}"
            if not why:
                return answer.strip()
            err_console.print(f"  {why}", style="red", markup=False, soft_wrap=True)

    def fields(self, given: list[str] | None) -> list[FormField]:
        """The form's fields: from --field, else asked one after another until a blank name."""
        if given:
            try:
                fields = [parse_field(spec) for spec in given]
            except ValueError as exc:
                raise bad_input(
                    "--field", str(exc), "Give each as name:type[:required], e.g. db_name:string"
                ) from exc
        elif not self.ask:
            raise bad_input(
                "--field",
                "the form needs at least one field",
                "Pass --field name:type[:required] (repeatable), e.g. --field db_name:string",
            )
        else:
            fields = self._ask_fields()
        names = [f.name for f in fields]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise bad_input("--field", f"field {', '.join(twice)} is given twice", "Name it once")
        return fields

    def _ask_fields(self) -> list[FormField]:
        console.print("Form fields, one at a time; an empty name ends the list.", markup=False)
        fields: list[FormField] = []
        while True:
            name = typer.prompt("Field name", default="", show_default=False).strip()
            if not name:
                if fields:
                    return fields
                err_console.print("  the form needs at least one field", style="red")
                continue
            kind = typer.prompt(f"  type ({', '.join(FIELD_TYPES)})", default="string").strip()
            values = ""
            if kind == "enum":
                values = typer.prompt("  values, separated by commas")
            required = typer.confirm("  required?", default=True)
            description = typer.prompt("  description", default="", show_default=False)
            choices = tuple(v.strip() for v in values.split(",") if v.strip())
            try:
                field = checked_field(FormField(name, kind, required, description.strip(), choices))
            except ValueError as exc:
                err_console.print(f"  {exc}", style="red", markup=False, soft_wrap=True)
                continue
            if field.name in (f.name for f in fields):
                err_console.print(f"  {field.name} is already a field", style="red", markup=False)
                continue
            fields.append(field)


def _targets(
    root: Path, category: str, item_id: str, action: ActionType
) -> tuple[Path, Path | None]:
    item_file = root / category / f"{item_id}.yaml"
    module = root / "modules" / item_id if action is ActionType.terraform else None
    return item_file, module


def _refuse_overwrite(item_file: Path, module: Path | None, root: Path, force: bool) -> None:
    from pao.spec.catalog import categories

    elsewhere = [
        p
        for c in categories()
        for p in (root / c / f"{item_file.stem}.yaml", root / c / f"{item_file.stem}.yml")
        if p.exists() and p != item_file
    ]
    if elsewhere:
        raise bad_input(
            "--id",
            f"id {item_file.stem} is already used by {elsewhere[0]}",
            "Ids are unique in the catalog; choose another --id",
        )
    existing = [item_file] if item_file.exists() else []
    if module is not None:
        existing += [module / n for n in ("main.tf", "variables.tf", "outputs.tf")]
        existing = [p for p in existing if p.exists()]
    if existing and not force:
        raise bad_input(
            "--force",
            f"{', '.join(map(str, existing))} already exist(s); nothing was written",
            "Pass --force to replace them, or choose another --id",
        )


def new_item(
    ctx: typer.Context,
    item_id: Annotated[
        str | None, typer.Option("--id", help="The item's id, kebab-case, e.g. redis-cache.")
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="One of the categories of the catalog's schema.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="The owning team, e.g. team-data.")] = None,
    name: Annotated[str | None, typer.Option(help="The item's name as people read it.")] = None,
    description: Annotated[
        str | None, typer.Option(help="One or two sentences on what a requester gets.")
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            help="A form field as name:type[:required] (type string, integer, boolean or "
            "enum=a,b,c; a fourth part is its description). Repeatable.",
        ),
    ] = None,
    action: Annotated[
        ActionType | None,
        typer.Option(help="How requests are fulfilled: a JIRA ticket, Terraform or a REST call."),
    ] = None,
    jira_project: Annotated[
        str | None,
        typer.Option(help="The JIRA project of the ticket (the fallback ticket for automated)."),
    ] = None,
    issue_type: Annotated[str | None, typer.Option(help="The ticket's issue type.")] = None,
    url: Annotated[str | None, typer.Option(help="rest: the URL the item's call goes to.")] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="The catalog folder; default: the one around the current directory, else "
            "./catalog.",
            file_okay=False,
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Ask nothing: flags, else defaults.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Start a catalog item (and its Terraform module) that validates as written.

    Asks for what the flags do not give (with --yes: nothing), writes the item file, checks it
    offline as `devctl validate catalog-item` does and says what to do next. Existing files are
    kept unless --force.

    Examples:

      devctl catalog new

      devctl catalog new --yes --id redis-cache --category databases --owner team-data
        --action terraform --field name:string:required --field size:enum=small,large
    """
    g = globals_of(ctx)
    if not yes and not sys.stdin.isatty():
        raise CliError(
            BAD_INPUT,
            "`devctl catalog new` asks questions and stdin is not a terminal",
            "Pass --yes with --id, --category, --owner, --field and --action",
            exit_code=2,
        )
    q = Questions(ask=not yes)
    from pao.spec.catalog import categories

    item_id = q.value(item_id, flag="--id", question="Item id (kebab-case)", problem=id_problem)
    category = q.value(
        category,
        flag="--category",
        question="Category",
        problem=category_problem,
        choices=categories(),
    )
    owner = q.value(owner, flag="--owner", question="Owning team", problem=owner_problem)
    name = q.value(
        name,
        flag="--name",
        question="Name",
        default=item_id.replace("-", " ").capitalize(),
        problem=lambda t: None if 3 <= len(t) <= 80 else "a name has 3 to 80 characters",
    )
    description = q.value(
        description,
        flag="--description",
        question="Description",
        default=f"{name} from {owner}: say in a sentence or two what a requester gets.",
        problem=lambda t: None if 10 <= len(t) <= 2000 else "10 to 2000 characters",
    )
    fields = q.fields(field)
    kind = ActionType(
        q.value(
            action.value if action else None,
            flag="--action",
            question="Action",
            choices=[a.value for a in ActionType],
        )
    )
    project = q.value(
        jira_project,
        flag="--jira-project",
        question="JIRA project of the " + ("ticket" if kind is ActionType.jira else "fallback"),
        default="PLATFORM",
        problem=lambda t: (
            None
            if PROJECT_KEY.fullmatch(t)
            else f"'{t}' is not a JIRA project key (upper-case, e.g. DBA)"
        ),
    )
    issue = q.value(issue_type, flag="--issue-type", question="Issue type", default="Task")
    target = ""
    if kind is ActionType.rest:
        target = q.value(
            url,
            flag="--url",
            question="URL of the API call",
            default=f"https://api.example.com/v1/{item_id}s",
            problem=lambda t: (
                None if re.match(r"^https?://[^/\s]+", t) else "an absolute http(s) URL"
            ),
        )
    root = directory or find_catalog(Path.cwd())
    item_file, module = _targets(root, category, item_id, kind)
    _refuse_overwrite(item_file, module, root, force)
    item = build_item(
        item_id=item_id,
        name=name,
        category=category,
        owner=owner,
        description=description,
        fields=fields,
        action=kind,
        project=project,
        issue_type=issue,
        url=target,
    )
    text = item_yaml(
        item,
        [
            f"{name}, owned by {owner}. Started with `devctl catalog new`: refine titles, help",
            "texts, patterns and defaults; templates/ shows every field of each action.",
            "yaml-language-server: $schema=../schema/catalog-item.json",
        ],
    )
    validated(text, item_file)
    if q.ask and not typer.confirm(f"Write {item_file}?", default=True):
        err_console.print("nothing was written", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    item_file.parent.mkdir(parents=True, exist_ok=True)
    item_file.write_text(text, encoding="utf-8")
    if module is not None:
        module.mkdir(parents=True, exist_ok=True)
        for file_name, content in module_files(item_id, name, fields).items():
            (module / file_name).write_text(content, encoding="utf-8")
    steps = [
        f"devctl test template {item_file}",
        f"devctl validate catalog {root}",
        f"name {owner} as the code owner of {category}/ in .github/CODEOWNERS",
        "open a pull request",
    ]
    if g.output is not OutputFormat.table:
        emit(
            {
                "file": str(item_file),
                "module": str(module) if module else None,
                "valid": True,
                "next": steps,
            },
            g.output,
        )
        return
    console.print(f"{item_file}: written, valid", markup=False, highlight=False, soft_wrap=True)
    if module is not None:
        console.print(
            f"{module}/: main.tf, variables.tf, outputs.tf",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print("next:", markup=False)
    for step in steps:
        console.print(f"  {step}", markup=False, highlight=False, soft_wrap=True)
