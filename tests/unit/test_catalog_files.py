"""The catalog folder as platform teams see it: every file valid, every fixture failing as named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pao.spec.catalog import read_directory, validate_catalog
from pao.spec.validation import validate_text

CATALOG = Path(__file__).resolve().parents[2] / "catalog"
FIXTURES = CATALOG / "tests"


def expected_rules(path: Path) -> set[str]:
    """The rules a fixture's `# expect:` header names."""
    match = re.search(r"^# expect: ([^\n(]+)", path.read_text(), re.MULTILINE)
    assert match, f"{path} has no '# expect:' header"
    return {r.strip() for r in match.group(1).split(",")}


def single_file_fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*/*.yaml"))


def directory_fixtures() -> list[Path]:
    return sorted(p for p in (FIXTURES / "invalid").iterdir() if p.is_dir())


def test_the_catalog_is_valid_as_a_whole() -> None:
    report = validate_catalog(read_directory(CATALOG))
    assert report.valid, [p.format() for p in report.problems]
    assert report.snapshot is not None
    assert set(report.snapshot.items) == {
        "dns-zone",
        "ecr-repository",
        "eks-application",
        "iam-role",
        "log-group",
        "parameterstore-standard",
        "postgresql-rds",
        "postgresql-standard",
        "s3-bucket",
        "sns-topic",
        "sqs-queue",
    }
    assert set(report.snapshot.bundles) == {"service-starter"}


def test_ten_automated_items_in_six_categories_each_with_a_manual_way_and_a_teardown() -> None:
    report = validate_catalog(read_directory(CATALOG))
    assert report.snapshot is not None
    automated = {
        item_id: item
        for item_id, item in report.snapshot.items.items()
        if item["fulfillment"]["mode"] == "automated"
    }
    assert len(automated) >= 10
    assert len({i["metadata"]["category"] for i in automated.values()}) >= 6
    for item_id, item in automated.items():
        fulfillment = item["fulfillment"]
        assert fulfillment["modes"] == ["automated", "manual"], item_id
        assert fulfillment["fallback"]["strategy"] == "manual", item_id
        assert fulfillment["fallback"]["jira"]["project"], item_id
        metadata = item["metadata"]
        assert metadata["support"], item_id
        terraform = any(a["type"] == "terraform" for a in fulfillment["actions"])
        assert terraform or item["lifecycle"]["teardown"], item_id


@pytest.mark.parametrize("path", sorted(CATALOG.glob("templates/*.yaml")), ids=lambda p: p.name)
def test_each_template_is_a_valid_item(path: Path) -> None:
    report = validate_text(path.read_text(), str(path))
    assert report.valid, [p.format() for p in report.problems]


@pytest.mark.parametrize("path", single_file_fixtures(), ids=lambda p: p.name)
def test_each_fixture_behaves_as_named(path: Path) -> None:
    report = validate_text(path.read_text(), str(path))
    expected = expected_rules(path)
    if expected == {"valid"}:
        assert report.valid, [p.format() for p in report.problems]
        return
    assert not report.valid
    assert {p.rule for p in report.problems} == expected, [p.format() for p in report.problems]
    for problem in report.problems:
        assert problem.line is not None, problem
        assert problem.format().startswith(f"{path}:{problem.line}")


@pytest.mark.parametrize("folder", directory_fixtures(), ids=lambda p: p.name)
def test_each_fixture_catalog_fails_with_its_rule(folder: Path) -> None:
    expected = set().union(
        *(expected_rules(p) for p in folder.rglob("*.yaml") if "# expect:" in p.read_text())
    )
    report = validate_catalog(read_directory(folder))
    assert not report.valid
    assert report.snapshot is None
    assert {p.rule for p in report.problems} == expected


def test_every_item_has_a_conditional_field_and_valid_examples() -> None:
    for path in CATALOG.glob("*/*.yaml"):
        data = yaml.safe_load(path.read_text())
        if data.get("kind") != "CatalogItem" or path.parent.name in ("templates", "tests"):
            continue
        form = data["form"]["schema"]
        assert "allOf" in form or "if" in form or "dependentRequired" in form, path
        assert form["examples"], path
        # Every item keeps a way to people: a JIRA action, or a manual fallback.
        manual = (data["fulfillment"].get("fallback") or {}).get("strategy") == "manual"
        assert manual or any(a["type"] == "jira" for a in data["fulfillment"]["actions"]), path


def test_a_yaml_syntax_error_names_its_line() -> None:
    report = validate_text("apiVersion: pao.dev/v1\nkind: [CatalogItem\n", "broken.yaml")
    assert [p.rule for p in report.problems] == ["yaml-syntax"]
    assert report.problems[0].line == 3 or report.problems[0].line == 2


def test_json_is_accepted_as_well_as_yaml() -> None:
    import json

    data = yaml.safe_load((FIXTURES / "valid" / "example-catalog-item.yaml").read_text())
    assert validate_text(json.dumps(data), "item.json").valid


def test_a_file_in_the_wrong_folder_or_name_is_reported(tmp_path: Path) -> None:
    source = (FIXTURES / "valid" / "example-catalog-item.yaml").read_text()
    (tmp_path / "compute").mkdir()
    (tmp_path / "compute" / "cache.yaml").write_text(source)
    report = validate_catalog(read_directory(tmp_path))
    messages = [p.message for p in report.problems]
    assert {p.rule for p in report.problems} == {"naming"}
    assert any("belongs in databases/" in m for m in messages)
    assert any("named redis-cache.yaml" in m for m in messages)


def test_a_bundle_dependency_cycle_is_reported(tmp_path: Path) -> None:
    source = (FIXTURES / "valid" / "example-catalog-item.yaml").read_text()
    (tmp_path / "databases").mkdir()
    (tmp_path / "databases" / "redis-cache.yaml").write_text(source)
    (tmp_path / "bundles").mkdir()
    (tmp_path / "bundles" / "loop.yaml").write_text(
        "apiVersion: pao.dev/v1\nkind: CatalogBundle\nmetadata: {id: loop, name: Loop, owner: "
        "team-data, version: 1.0.0, description: A bundle going round.}\nitems:\n"
        "  - {ref: a, item: redis-cache, depends_on: [b]}\n"
        "  - {ref: b, item: redis-cache, depends_on: [a]}\n"
    )
    report = validate_catalog(read_directory(tmp_path))
    assert [p.rule for p in report.problems] == ["bundle-cycle"]
    assert "a -> b -> a" in report.problems[0].message


def test_codeowners_covers_each_items_owner_for_its_folder() -> None:
    lines = [
        line.split()
        for line in (CATALOG / ".github" / "CODEOWNERS").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    owners = {path.strip("/"): teams for path, *teams in lines}
    for path in CATALOG.glob("*/*.yaml"):
        data = yaml.safe_load(path.read_text())
        if data.get("kind") != "CatalogItem" or path.parent.name in ("templates", "tests"):
            continue
        team = data["metadata"]["owner"]
        assert f"@example-org/{team}" in owners[path.parent.name], path


def test_the_workflow_validates_changes_on_pull_requests_and_all_on_main() -> None:
    workflow = yaml.safe_load(
        (CATALOG / ".github" / "workflows" / "validate-catalog.yml").read_text()
    )
    steps = " ".join(str(s.get("run", "")) for s in workflow["jobs"]["validate"]["steps"])
    assert "validate-changed.sh" in steps
    assert "validate-all.sh" in steps
    assert set(workflow[True]) >= {"pull_request", "push"}  # YAML 1.1 reads `on` as true


def hostile_item(pattern: str, example: str) -> dict:
    """The example item with `cache_name` checked by `pattern` and an example that defeats it."""
    item = yaml.safe_load((FIXTURES / "valid" / "example-catalog-item.yaml").read_text())
    item["form"]["schema"]["properties"]["cache_name"]["pattern"] = pattern
    item["form"]["schema"]["examples"] = [{"cache_name": example, "environment": "dev"}]
    return item


def test_an_example_against_a_backtracking_pattern_is_reported_quickly() -> None:
    import json
    import time

    started = time.monotonic()
    report = validate_text(json.dumps(hostile_item("^(a|aa)+$", "a" * 40 + "b")))
    nested = validate_text(json.dumps(hostile_item("^(a+)+$", "a" * 28 + "b")))
    assert time.monotonic() - started < 2
    assert [(p.rule, p.pointer) for p in report.problems] == [
        ("pattern-timeout", "/form/schema/examples/0/cache_name")
    ]
    assert [p.rule for p in nested.problems] == ["form-example"]


@pytest.mark.parametrize(
    "text",
    [
        '{"kind": "CatalogItem", "metadata": {"a": ' + "[" * 900 + "]" * 900 + "}}",
        '{"kind": "CatalogItem", "metadata": {"n": ' + "9" * 5_000 + "}}",
    ],
    ids=["nested-900-deep", "5000-digit-integer"],
)
def test_a_document_python_cannot_hold_is_reported_not_raised(text: str) -> None:
    report = validate_text(text, "hostile.yaml")
    assert not report.valid
    assert [p.rule for p in report.problems] == ["yaml-syntax"]
