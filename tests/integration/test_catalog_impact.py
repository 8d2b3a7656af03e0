"""`devctl catalog impact`: a platform team checks an edited item against what is live.

The gateway, relay, projector and request service run on their own database with the
repository's catalog; no fulfilment service runs, so the two SQS queues Dana asks for stay in
flight, and each create request's resource stays `provisioning`: live, made with the served
version 1.0.0, its inputs recorded. The team then edits sqs-queue.yaml in a scratch folder and
asks what publishing the edit would break.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from test_devctl_batch import devctl

from conftest import REPO, TEST_KEY_ID, TEST_SECRET, fresh_database
from pao.catalog.history import at_version, published_versions
from pao.contracts.events import CatalogItemPublished, CatalogItemUpdated
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, fresh_stack, signed_call

pytestmark = pytest.mark.asyncio(loop_scope="session")

SQS = REPO / "catalog" / "messaging" / "sqs-queue.yaml"


@dataclass
class Live:
    url: str
    requests: list[str]
    resources: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with fresh_stack(
        postgres_server,
        settings,
        keys,
        services=("gateway", "relay", "projector", "request"),
        data_dir=tmp_path_factory.mktemp("impact"),
    ) as running:
        yield running


async def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    return await signed_call(url, method, path, (TEST_KEY_ID, TEST_SECRET), **kwargs)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(stack: Stack) -> Live:
    """Two queues asked for; wait until both requests and their resources are listed."""
    app = f"i{uuid.uuid4().hex[:8]}"
    requests = []
    for name, extra in (("jobs", {"retention_days": 7}), ("mail", {})):
        inputs = {"application": app, "queue": name, "environment": "dev", **extra}
        answer = await api(
            stack.url, "POST", "/requests", body={"item_id": "sqs-queue", "inputs": inputs}
        )
        requests.append(answer["request_id"])

    async def resources() -> list[str] | None:
        page = await api(stack.url, "GET", "/resources", params={"item_id": "sqs-queue"})
        listed = await api(stack.url, "GET", "/requests", params={"item_id": "sqs-queue"})
        ready = len(page["resources"]) == 2 and listed["total"] == 2
        return [r["resource_id"] for r in page["resources"]] if ready else None

    found = await eventually(resources, timeout=60, what="both resources and requests listed")
    return Live(stack.url, requests, found)


def edit(tmp_path: Path, change: Any, name: str = "sqs-queue.yaml") -> Path:
    item = yaml.safe_load(SQS.read_text())
    item["metadata"]["version"] = "1.1.0"
    change(item)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(item, sort_keys=False))
    return path


def without_retention(item: dict[str, Any]) -> None:
    del item["form"]["schema"]["properties"]["retention_days"]
    item["form"]["order"].remove("retention_days")
    for example in item["form"]["schema"]["examples"]:
        example.pop("retention_days", None)
    action = item["fulfillment"]["actions"][0]["rest"]["body"]
    action["Attributes"] = "{{ {'VisibilityTimeout': inputs.visibility_timeout_seconds | string} }}"
    item["fulfillment"]["fallback"]["jira"]["description"] = "Please make the queue by hand."


async def test_removing_a_field_live_queues_hold_is_an_error_naming_each(
    live: Live, tmp_path: Path
) -> None:
    target = edit(tmp_path, without_retention)

    code, out, err = await devctl(
        tmp_path, live.url, "-o", "json", "catalog", "impact", "sqs-queue", "--file", str(target)
    )

    assert code == 1, err
    report = json.loads(out)
    assert (report["served_version"], report["target_version"]) == ("1.0.0", "1.1.0")
    assert sorted(r["request_id"] for r in report["requests"]) == sorted(live.requests)
    for row in report["requests"]:
        assert row["status"] in {"submitted", "in_progress"}
        assert row["item_version"] == "1.0.0"
        assert row["requester"] == "dana"
    assert sorted(r["resource_id"] for r in report["resources"]) == sorted(live.resources)
    for row in report["resources"]:
        assert (row["item_version"], row["owner"]) == ("1.0.0", "dana")
        assert row["state"] == "provisioning"
        assert row["older_than_target"] is True
    [removed] = [f for f in report["findings"] if f["level"] == "error"]
    assert (removed["rule"], removed["subject"]) == ("field-removed", "retention_days")
    # Both requests hold it (the form's default fills it in), and so do both resources.
    assert sorted(removed["used_by"]) == sorted(
        [f"request {r}" for r in live.requests] + [f"resource {r}" for r in live.resources]
    )
    assert report["errors"] == 1
    assert report["ok"] is False
    [field] = report["diff"]["fields"]
    assert (field["field"], field["change"]) == ("retention_days", "removed")
    [action] = report["diff"]["actions"]
    assert action["keys"] == ["rest.body.Attributes"]


async def test_an_added_optional_field_is_news_and_the_table_lists_what_is_live(
    live: Live, tmp_path: Path
) -> None:
    def add_dead_letter(item: dict[str, Any]) -> None:
        item["form"]["schema"]["properties"]["dead_letter"] = {"type": "boolean", "default": False}
        item["form"]["order"].append("dead_letter")

    target = edit(tmp_path, add_dead_letter)

    code, out, err = await devctl(
        tmp_path, live.url, "catalog", "impact", "sqs-queue", "--file", str(target)
    )

    assert code == 0, err
    assert "served 1.0.0, target 1.1.0" in out
    assert "2 request(s) in flight" in out
    assert "2 live resource(s), 2 made with a version before 1.1.0" in out
    for identifier in live.requests + live.resources:
        assert identifier in out
    assert "field-added" in out
    assert "dead_letter" in out
    assert "breaking" not in err


async def test_a_newly_required_field_without_default_breaks_everything_live(
    live: Live, tmp_path: Path
) -> None:
    def require_cost_centre(item: dict[str, Any]) -> None:
        schema = item["form"]["schema"]
        schema["properties"]["cost_centre"] = {"type": "string"}
        schema["required"].append("cost_centre")
        for example in schema["examples"]:
            example["cost_centre"] = "cc-1"

    target = edit(tmp_path, require_cost_centre)

    code, out, err = await devctl(
        tmp_path, live.url, "catalog", "impact", "sqs-queue", "--file", str(target)
    )

    assert code == 1
    assert "field-newly-required" in out
    assert "1 breaking change(s)" in err
    assert "Traceback" not in err


async def test_an_invalid_or_foreign_file_is_refused_before_asking_the_server(
    live: Live, tmp_path: Path
) -> None:
    broken = edit(tmp_path, lambda item: item["metadata"].pop("owner"), "broken.yaml")
    code, out, err = await devctl(
        tmp_path, live.url, "catalog", "impact", "sqs-queue", "--file", str(broken)
    )
    assert code == 2
    assert "PAO-CLI-004" in err
    assert "not a valid catalog item" in err
    assert "devctl validate catalog-item" in err
    assert out == ""

    other = edit(tmp_path, lambda item: None, "other.yaml")
    code, out, err = await devctl(
        tmp_path, live.url, "catalog", "impact", "sns-topic", "--file", str(other)
    )
    assert code == 2
    assert "defines item sqs-queue, not sns-topic" in err

    def rename(item: dict[str, Any]) -> None:
        item["metadata"]["id"] = "sqs-queue-next"

    unknown = edit(tmp_path, rename, "next.yaml")
    code, out, err = await devctl(
        tmp_path, live.url, "catalog", "impact", "sqs-queue-next", "--file", str(unknown)
    )
    assert code == 1
    assert "PAO-CAT-001" in err
    assert "Traceback" not in err


async def test_the_served_version_is_listed_and_compared_by_version(
    live: Live, tmp_path: Path
) -> None:
    versions = await api(live.url, "GET", "/catalog/items/sqs-queue/versions")
    assert [v["version"] for v in versions["versions"]] == ["1.0.0"]
    served = await api(live.url, "GET", "/catalog/items/sqs-queue")
    published = await api(live.url, "GET", "/catalog/items/sqs-queue/versions/1.0.0")
    assert published["item"] == served["item"]
    assert published["item_hash"] == versions["versions"][0]["item_hash"]

    code, out, err = await devctl(
        tmp_path, live.url, "-o", "json", "catalog", "impact", "sqs-queue", "--to", "1.0.0"
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["target_file"], report["errors"]) == ("version 1.0.0", 0)
    assert len(report["requests"]) == 2

    code, _, err = await devctl(
        tmp_path, live.url, "catalog", "impact", "sqs-queue", "--to", "9.9.9"
    )
    assert code == 1
    assert "PAO-CAT-001" in err
    assert "never published version 9.9.9" in err
    code, _, err = await devctl(tmp_path, live.url, "catalog", "impact", "sqs-queue")
    assert code == 2
    assert "PAO-CLI-004" in err


async def test_every_published_definition_is_listed_once_oldest_first(
    postgres_server: str,
) -> None:
    async with fresh_database(postgres_server) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2, application_name="pao-tests")
        try:
            store = EventStore(pool)
            item = yaml.safe_load(SQS.read_text())
            newer = {**item, "metadata": {**item["metadata"], "version": "1.1.0"}}
            common = {"item_id": "sqs-queue", "path": "messaging/sqs-queue.yaml"}
            events = [
                CatalogItemPublished(**common, version="1.0.0", item_hash="sha256:a", item=item),
                CatalogItemPublished(
                    item_id="s3-bucket",
                    path="storage/s3-bucket.yaml",
                    version="1.0.0",
                    item_hash="sha256:other",
                    item={},
                ),
                CatalogItemUpdated(
                    **common,
                    previous_version="1.0.0",
                    version="1.1.0",
                    item_hash="sha256:b",
                    item=newer,
                ),
                CatalogItemUpdated(  # reverted: the first definition again
                    **common,
                    previous_version="1.1.0",
                    version="1.0.0",
                    item_hash="sha256:a",
                    item=item,
                ),
            ]
            await store.append(
                "catalog", [e.new(correlation_id=None, actor="pao-catalog") for e in events], 0
            )
            versions = await published_versions(store, "sqs-queue")
            assert [(v.version, v.item_hash) for v in versions] == [
                ("1.0.0", "sha256:a"),
                ("1.1.0", "sha256:b"),
            ]
            assert at_version(versions, "1.1.0").item == newer
            assert at_version(versions, "2.0.0") is None
        finally:
            await pool.close()
