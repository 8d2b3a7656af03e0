"""The catalog over the REST API, signed as a developer and as an admin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, signed_client
from pao.devctl.errors import CliError

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIXTURES = REPO / "catalog" / "tests"


async def api(gateway: str, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> Any:
    client = (
        signed_client(gateway, "PAOADMINKEY000000001", "admin-secret")
        if admin
        else signed_client(gateway)
    )
    try:
        return await asyncio.to_thread(client.request, method, path, **kwargs)
    finally:
        client.close()


async def failure(gateway: str, method: str, path: str, **kwargs: Any) -> CliError:
    with pytest.raises(CliError) as caught:
        await api(gateway, method, path, **kwargs)
    return caught.value


async def test_the_catalog_lists_every_item_with_its_version(gateway: str) -> None:
    page = await api(gateway, "GET", "/catalog")
    assert page["total"] == 11
    assert [i["id"] for i in page["items"]] == [
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
    ]
    assert page["catalog_version"]
    eks = page["items"][2]
    assert eks["owner"] == "team-compute"
    assert eks["mode"] == "automated"
    rds = page["items"][6]
    assert rds["mode"] == "manual"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"category": "databases"}, ["postgresql-rds", "postgresql-standard"]),
        ({"tag": "sqs"}, ["sqs-queue"]),
        ({"owner": "team-security"}, ["iam-role", "parameterstore-standard"]),
        ({"tag": "kubernetes"}, ["eks-application"]),
        ({"q": "multi-az"}, ["postgresql-rds"]),
        ({"limit": 1, "offset": 1}, ["ecr-repository"]),
        ({"category": "networking"}, ["dns-zone"]),
        ({"category": "networking", "tag": "kubernetes"}, []),
    ],
)
async def test_filters_and_paging(gateway: str, params: dict, expected: list[str]) -> None:
    page = await api(gateway, "GET", "/catalog", params=params)
    assert [i["id"] for i in page["items"]] == expected


async def test_a_bad_paging_parameter_is_named(gateway: str) -> None:
    error = await failure(gateway, "GET", "/catalog", params={"limit": "lots"})
    assert error.status == 422
    assert error.code == "PAO-API-008"
    assert error.details[0]["field"] == "limit"


async def test_an_item_and_its_form_schema(gateway: str) -> None:
    item = (await api(gateway, "GET", "/catalog/items/postgresql-rds"))["item"]
    assert item["metadata"]["owner"] == "team-data"
    assert item["fulfillment"]["actions"][0]["type"] == "jira"
    schema = await api(gateway, "GET", "/catalog/items/postgresql-rds/schema")
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["title"] == "PostgreSQL on Amazon RDS (dedicated)"
    assert "db_name" in schema["properties"]


async def test_an_unknown_item_is_a_404_naming_it(gateway: str) -> None:
    error = await failure(gateway, "GET", "/catalog/items/mainframe")
    assert error.status == 404
    assert error.code == "PAO-CAT-001"
    assert "mainframe" in error.message


async def test_only_admins_and_platform_operators_refresh(gateway: str) -> None:
    error = await failure(gateway, "POST", "/catalog/refresh", body={})
    assert error.status == 403
    assert error.code == "PAO-AUTH-010"
    result = await api(gateway, "POST", "/catalog/refresh", body={}, admin=True)
    assert result["status"] == "unchanged"
    assert result["source"].startswith("dir:")


@pytest.mark.parametrize(
    "path", sorted(FIXTURES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
async def test_each_fixture_behaves_as_named_through_the_api(gateway: str, path: Path) -> None:
    header = next(line for line in path.read_text().splitlines() if line.startswith("# expect:"))
    expected = {r.strip() for r in header.removeprefix("# expect:").split(",")}
    result = await api(
        gateway,
        "POST",
        "/validate/catalog-item",
        raw=path.read_bytes(),
        content_type="application/yaml",
        params={"filename": path.name},
    )
    if expected == {"valid"}:
        assert result["valid"] is True
        assert result["problems"] == []
    else:
        assert result["valid"] is False
        assert {p["rule"] for p in result["problems"]} == expected
        assert all(p["line"] for p in result["problems"])
        assert all(p["file"] == path.name for p in result["problems"])


async def test_validation_accepts_json_and_reports_unparseable_text(gateway: str) -> None:
    broken = await api(
        gateway,
        "POST",
        "/validate/catalog-item",
        raw=b"kind: [oops",
        content_type="application/yaml",
    )
    assert broken["valid"] is False
    assert broken["problems"][0]["rule"] == "yaml-syntax"
    assert broken["problems"][0]["line"] >= 1
    item = (await api(gateway, "GET", "/catalog/items/eks-application"))["item"]
    as_json = await api(gateway, "POST", "/validate/catalog-item", body=item)
    assert as_json == {
        "valid": True,
        "kind": "CatalogItem",
        "id": "eks-application",
        "problems": [],
    }


async def test_a_backtracking_pattern_is_reported_without_stalling_the_gateway(
    gateway: str,
) -> None:
    item = (await api(gateway, "GET", "/catalog/items/eks-application"))["item"]
    form = item["form"]["schema"]
    form["properties"]["app_name"]["pattern"] = "^(a|aa)+$"
    form["examples"] = [{**form["examples"][0], "app_name": "a" * 40 + "b"}]
    started = asyncio.get_running_loop().time()
    report = await api(gateway, "POST", "/validate/catalog-item", body=item)
    assert asyncio.get_running_loop().time() - started < 2
    assert report["valid"] is False
    assert [(p["rule"], p["pointer"]) for p in report["problems"]] == [
        ("pattern-timeout", "/form/schema/examples/0/app_name")
    ]
