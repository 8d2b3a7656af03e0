"""A platform engineer starts catalog items with devctl: `catalog new` writes an item (and its
Terraform module) that validates as written, and `catalog import-jira` drafts an item from the
create screen of an issue type on the embedded JIRA server.

devctl's app runs in this process, its consoles written to buffers and its errors printed as
`devctl` prints them.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from pao.devctl.authoring import item_yaml
from pao.devctl.errors import CliError
from pao.devctl.jira_import import JiraField, draft_item, sort_fields
from pao.devctl.main import app
from pao.devctl.output import console, err_console


def devctl(*args: str | Path) -> tuple[int, str, str]:
    """devctl's exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    console.file, err_console.file = out, err
    try:
        code = app([str(a) for a in args], standalone_mode=False)
    except CliError as exc:
        err.write(exc.one_line())
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    finally:
        console.file, err_console.file = sys.stdout, sys.stderr
    return code if isinstance(code, int) else 0, out.getvalue(), err.getvalue()


def new_item(catalog: Path, item_id: str, action: str, *extra: str) -> tuple[int, str, str]:
    return devctl(
        "catalog", "new", "--yes", "--dir", catalog, "--id", item_id, "--category", "databases",
        "--owner", "team-data", "--action", action, "--jira-project", "DBA",
        "--field", "cache_name:string:required:Lower-case letters and dashes.",
        "--field", "size:enum=small,large:required",
        "--field", "replicas:integer",
        "--field", "tls:boolean",
        *extra,
    )  # fmt: skip


def rendered(item_file: Path, inputs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every action of the item as PAO would run it (`devctl test template`)."""
    args: list[str | Path] = ["-o", "json", "test", "template", item_file]
    if inputs is not None:
        given = item_file.with_name(f"{item_file.stem}-inputs.json")
        given.write_text(json.dumps(inputs))
        args += ["--inputs", given]
    code, out, err = devctl(*args)
    assert code == 0, err
    actions: list[dict[str, Any]] = json.loads(out)["actions"]
    return actions


@pytest.mark.parametrize("action", ["jira", "terraform", "rest"])
def test_new_item_is_written_where_the_catalog_expects_it_and_validates(
    tmp_path: Path, action: str
) -> None:
    catalog = tmp_path / "catalog"
    code, out, err = new_item(catalog, "redis-cache", action)

    assert code == 0, err
    item_file = catalog / "databases" / "redis-cache.yaml"
    assert f"{item_file}: written, valid" in out
    assert devctl("validate", "catalog-item", item_file)[0] == 0
    code, out, err = devctl("validate", "catalog", catalog)
    assert code == 0, err + out
    item = yaml.safe_load(item_file.read_text())
    form = item["form"]["schema"]
    assert list(form["properties"]) == ["cache_name", "size", "replicas", "tls"]
    assert form["required"] == ["cache_name", "size"]
    assert form["properties"]["size"]["enum"] == ["small", "large"]
    assert form["properties"]["cache_name"]["description"] == "Lower-case letters and dashes."
    (first,) = rendered(item_file)
    assert first["type"] == action
    if action == "jira":
        assert first["spec"]["project"] == "DBA"
        assert "| Size | small |" in first["spec"]["description"]
    else:
        # An automated item falls back to a ticket; its modes say so.
        assert item["fulfillment"]["modes"] == ["automated", "manual"]
        assert item["fulfillment"]["fallback"]["jira"]["project"] == "DBA"


def test_a_terraform_item_gets_a_module_of_built_in_resources(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    assert new_item(catalog, "redis-cache", "terraform")[0] == 0

    module = catalog / "modules" / "redis-cache"
    item = yaml.safe_load((catalog / "databases" / "redis-cache.yaml").read_text())
    spec = item["fulfillment"]["actions"][0]["terraform"]
    assert spec["module"] == "modules/redis-cache"
    assert sorted(p.name for p in module.iterdir()) == ["main.tf", "outputs.tf", "variables.tf"]
    main = (module / "main.tf").read_text()
    assert 'resource "terraform_data" "redis_cache"' in main
    assert "required_providers" not in main
    assert 'provider "' not in main
    assert 'contains(["small", "large"], var.size)' in main
    variables = (module / "variables.tf").read_text()
    for name in spec["variables"]:
        assert f'variable "{name}"' in variables
    assert "type        = bool" in variables
    assert 'output "id"' in (module / "outputs.tf").read_text()
    # An optional field the requester leaves out reaches Terraform as null, its variable's default.
    (action,) = rendered(
        catalog / "databases" / "redis-cache.yaml", {"cache_name": "c1", "size": "large"}
    )
    assert action["spec"]["variables"] == {
        "cache_name": "c1",
        "size": "large",
        "replicas": None,
        "tls": None,
    }


def test_the_catalog_around_the_current_directory_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = tmp_path / "platform" / "catalog" / "schema"
    schema.mkdir(parents=True)
    (schema / "catalog-item.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "platform" / "catalog" / "schema")

    code, _, err = devctl(
        "catalog", "new", "-y", "--id", "kafka-topic", "--category", "messaging",
        "--owner", "team-messaging", "--action", "jira", "--field", "topic:string:required",
    )  # fmt: skip

    assert code == 0, err
    assert (tmp_path / "platform" / "catalog" / "messaging" / "kafka-topic.yaml").is_file()


def test_an_existing_item_is_kept_unless_forced(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    assert new_item(catalog, "redis-cache", "terraform")[0] == 0
    item_file = catalog / "databases" / "redis-cache.yaml"
    item_file.write_text(item_file.read_text() + "# edited by hand\n")

    code, _, err = new_item(catalog, "redis-cache", "terraform")

    assert code == 2
    assert "PAO-CLI-004" in err
    assert "already exist" in err
    assert "--force" in err
    assert item_file.read_text().endswith("# edited by hand\n")
    code, _, err = new_item(catalog, "redis-cache", "terraform", "--force")
    assert code == 0, err
    assert "# edited by hand" not in item_file.read_text()


def test_an_id_used_in_another_category_is_refused(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    assert new_item(catalog, "redis-cache", "jira")[0] == 0

    code, _, err = devctl(
        "catalog", "new", "-y", "--dir", catalog, "--id", "redis-cache", "--category", "storage",
        "--owner", "team-data", "--action", "jira", "--field", "name:string", "--force",
    )  # fmt: skip

    assert code == 2
    assert "already used by" in err
    assert not (catalog / "storage").exists()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--id", "Redis_Cache", "is not an item id"),
        ("--id", "rc", "is not an item id"),
        ("--category", "caches", "is not a category; the schema allows compute"),
        ("--owner", "data", "is not a team id"),
        ("--field", "Cache Name:string", "is not snake_case"),
        ("--field", "size:enum", "needs its values"),
        ("--field", "size:float", "is not one of string, integer, boolean, enum"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    given = {
        "--id": "redis-cache",
        "--category": "databases",
        "--owner": "team-data",
        "--field": "name:string",
    } | {flag: value}
    args = [a for pair in given.items() for a in pair]
    catalog = tmp_path / "catalog"

    code, out, err = devctl("catalog", "new", "-y", "--dir", catalog, "--action", "jira", *args)

    assert code == 2
    assert err.startswith(f"error PAO-CLI-004: {flag}: ")
    assert says in err
    assert "Traceback" not in out + err
    assert not catalog.exists()


class Terminal(io.StringIO):
    """What a person types at devctl's questions, one answer a line."""

    def isatty(self) -> bool:
        return True


def test_new_asks_what_the_flags_do_not_give_and_asks_again_after_a_bad_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [
        "Redis_Cache",  # not an id: asked again
        "redis-cache",
        "databases",
        "team-data",
        "",  # name: the default
        "",  # description: the default
        "cache_name",
        "",  # type: string
        "y",
        "The cache's name.",
        "size",
        "enum",
        "small, large",
        "n",
        "",
        "",  # no more fields
        "terraform",
        "DBA",
        "",  # issue type: Task
        "",  # write it: yes
    ]
    monkeypatch.setattr(sys, "stdin", Terminal("\n".join(answers) + "\n"))
    catalog = tmp_path / "catalog"

    code, _, err = devctl("catalog", "new", "--dir", catalog)

    assert code == 0, err
    assert "is not an item id" in err
    item = yaml.safe_load((catalog / "databases" / "redis-cache.yaml").read_text())
    assert item["metadata"]["name"] == "Redis cache"
    form = item["form"]["schema"]
    assert form["required"] == ["cache_name"]
    assert form["properties"]["size"]["enum"] == ["small", "large"]
    assert item["fulfillment"]["fallback"]["jira"]["project"] == "DBA"
    assert (catalog / "modules" / "redis-cache" / "main.tf").is_file()


def test_without_a_terminal_new_needs_yes(tmp_path: Path) -> None:
    code, _, err = devctl("catalog", "new", "--dir", tmp_path, "--id", "redis-cache")

    assert code == 2
    assert "stdin is not a terminal" in err
    assert "--yes" in err
    assert list(tmp_path.iterdir()) == []


async def test_import_jira_mirrors_the_create_screen_of_an_issue_type(
    jira_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBA_JIRA_TOKEN", "tok-3f9a1c-never-shown")
    draft = tmp_path / "dba-task.yaml"

    code, out, err = await asyncio.to_thread(
        devctl,
        "-o", "json", "catalog", "import-jira", "--url", jira_url, "--project", "DBA",
        "--issue-type", "task", "--user", "pao", "--token-env", "DBA_JIRA_TOKEN",
        "--category", "databases", "--out", draft,
    )  # fmt: skip

    assert code == 0, err
    assert "tok-3f9a1c" not in out + err
    report = json.loads(out)
    mapped = {m["jira_field"]: m for m in report["mapped"]}
    assert (mapped["summary"]["field"], mapped["summary"]["required"]) == ("summary", True)
    assert mapped["duedate"]["type"] == "string"
    assert mapped["customfield_10004"] == {
        "field": "story_points",
        "jira_field": "customfield_10004",
        "jira_type": "number",
        "type": "number",
        "required": False,
    }
    skipped = {s["jira_field"]: s["reason"] for s in report["skipped"]}
    assert "user has no form equivalent" in skipped["assignee"]
    assert "correlation id" in skipped["customfield_10100"]
    assert {s["jira_field"] for s in report["set_by_action"]} == {"issuetype", "labels"}
    assert devctl("validate", "catalog-item", draft)[0] == 0
    item = yaml.safe_load(draft.read_text())
    assert item["metadata"]["id"] == "dba-task"
    assert item["metadata"]["owner"] == "team-dba"
    assert item["form"]["schema"]["required"] == ["summary"]
    (ticket,) = rendered(draft, {"summary": "Restore orders to staging", "story_points": 3})
    assert ticket["spec"]["project"] == "DBA"
    assert ticket["spec"]["issue_type"] == "Task"
    assert ticket["spec"]["summary"] == "Restore orders to staging"
    assert ticket["spec"]["fields"] == {"duedate": None, "customfield_10004": 3}


async def test_import_jira_names_the_projects_when_the_project_is_unknown(
    jira_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    code, out, err = await asyncio.to_thread(
        devctl, "catalog", "import-jira", "--url", jira_url, "--project", "NOPE",
        "--issue-type", "Task",
    )  # fmt: skip

    assert code == 2
    assert err.startswith("error PAO-CLI-004: JIRA at")
    assert "has no project NOPE" in err
    assert "DBA" in err
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []
    code, _, err = await asyncio.to_thread(
        devctl, "catalog", "import-jira", "--url", jira_url, "--project", "DBA",
        "--issue-type", "Database request",
    )  # fmt: skip
    assert code == 2
    assert "has no issue type Database request" in err
    assert "Task" in err


def test_choices_reach_jira_in_the_shape_its_api_takes(tmp_path: Path) -> None:
    """createmeta as Jira Data Center answers it for a screen with choice fields."""
    screen = {
        "summary": {"required": True, "name": "Summary", "schema": {"type": "string"}},
        "priority": {
            "required": False,
            "name": "Priority",
            "schema": {"type": "priority", "system": "priority"},
            "allowedValues": [{"id": "2", "name": "High"}, {"id": "3", "name": "Medium"}],
            "hasDefaultValue": True,
            "defaultValue": {"id": "3", "name": "Medium"},
        },
        "customfield_10200": {
            "required": True,
            "name": "Environment",
            "schema": {"type": "option", "custom": "select", "customId": 10200},
            "allowedValues": [
                {"id": "1", "value": "dev"},
                {"id": "2", "value": "prod"},
                {"id": "3", "value": "retired", "disabled": True},
            ],
        },
        "customfield_10201": {
            "required": False,
            "name": "Tier",
            "schema": {"type": "option", "custom": "select", "customId": 10201},
            "allowedValues": [{"id": "4", "value": "gold"}],
        },
        "customfield_10202": {
            "required": False,
            "name": "Teams",
            "schema": {"type": "array", "items": "option", "customId": 10202},
            "allowedValues": [{"id": "5", "value": "a"}],
        },
    }
    fields = [JiraField.of(field_id, meta) for field_id, meta in screen.items()]
    mapped, _, skipped = sort_fields(fields, set())
    draft = tmp_path / "ops-change.yaml"
    item = draft_item(
        item_id="ops-change",
        name="Operations: Change",
        category="compute",
        owner="team-ops",
        project={"key": "OPS", "name": "Operations"},
        issue_type="Change",
        mapped=mapped,
    )
    draft.write_text(item_yaml(item, []))

    assert devctl("validate", "catalog-item", draft)[0] == 0
    form = item["form"]["schema"]["properties"]
    assert form["environment"]["enum"] == ["dev", "prod"]
    assert (form["priority"]["enum"], form["priority"]["default"]) == (["High", "Medium"], "Medium")
    assert [s.field.id for s in skipped] == ["customfield_10202"]
    (ticket,) = rendered(draft, {"summary": "Rotate keys", "environment": "prod"})
    assert ticket["spec"]["fields"] == {
        "customfield_10200": {"value": "prod"},
        "customfield_10201": None,
    }
    assert ticket["spec"]["priority"] == "Medium"
