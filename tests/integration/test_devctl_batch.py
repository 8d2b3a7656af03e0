"""devctl batches and exports against a running gateway: many requests from one file, safely
run again, and every page of a list written out.

devctl's own app runs in this process (in a thread, while the gateway answers on the loop),
signing as dana with a profile of its own; its errors are printed as `devctl` prints them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import typer

from conftest import TEST_KEY_ID, TEST_SECRET, signed_client
from pao.devctl.errors import CliError
from pao.devctl.main import app
from pao.devctl.output import console, err_console
from pao.request.aggregate import stream_of
from pao.shared.eventstore import EventStore
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, devctl_profile, fresh_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def projected(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A gateway whose read models the projector keeps up to date, for lists and exports."""
    async with fresh_stack(
        postgres_server,
        settings,
        keys,
        services=("gateway", "projector"),
        data_dir=tmp_path_factory.mktemp("export"),
    ) as running:
        yield running


def _invoke(args: tuple[str, ...], config: Path) -> tuple[int, str, str]:
    """devctl's app with its consoles written to buffers (the gateway's own logs, on this
    process's stdout, stay out of them), its errors printed as `devctl` prints them."""
    out, err = io.StringIO(), io.StringIO()
    before = os.environ.get("PAO_CONFIG_FILE")
    os.environ["PAO_CONFIG_FILE"] = str(config)
    console.file, err_console.file = out, err
    try:
        code = app(list(args), standalone_mode=False)
    except CliError as exc:
        err.write(exc.one_line())
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    finally:
        console.file, err_console.file = sys.stdout, sys.stderr
        if before is None:
            del os.environ["PAO_CONFIG_FILE"]
        else:
            os.environ["PAO_CONFIG_FILE"] = before
    return code if isinstance(code, int) else 0, out.getvalue(), err.getvalue()


async def devctl(tmp_path: Path, endpoint: str, *args: str) -> tuple[int, str, str]:
    """Run devctl as dana; returns exit code, stdout, stderr."""
    config = tmp_path / f"config-{endpoint.rsplit(':', 1)[-1]}.yaml"
    if not config.exists():
        devctl_profile(config, endpoint, (TEST_KEY_ID, TEST_SECRET))
    return await asyncio.to_thread(_invoke, args, config)


async def total_requests(endpoint: str, item_id: str) -> int:
    client = signed_client(endpoint)
    try:
        page = await asyncio.to_thread(
            client.request, "GET", "/requests", params={"item_id": item_id}
        )
    finally:
        client.close()
    return page["total"]


def queue(application: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"application": application, "queue": name, "environment": "dev", **extra}


async def test_a_yaml_batch_submits_each_row_once_and_names_the_refused_row(
    gateway: str, tmp_path: Path
) -> None:
    app = f"b{uuid.uuid4().hex[:8]}"
    batch = tmp_path / "queues.yaml"
    batch.write_text(
        json.dumps(
            [
                {"item_id": "sqs-queue", "inputs": queue(app, "orders"), "idempotency_key": app},
                {"item_id": "sqs-queue", "inputs": queue(app, "emails", retention_days=7)},
                {"item_id": "sqs-queue", "inputs": queue(app, "Not A Name")},
            ]
        )
    )

    code, out, err = await devctl(
        tmp_path, gateway, "-o", "json", "request", "submit", "--from", str(batch)
    )
    assert code == 1, err
    first = json.loads(out)
    assert [r["result"] for r in first] == ["submitted", "submitted", "refused"]
    assert first[0]["idempotency_key"] == app
    assert first[1]["idempotency_key"].startswith("batch-")
    refused = first[2]
    assert refused["row"] == 3
    assert refused["code"] == "PAO-API-006"
    assert "queue" in refused["reason"]
    assert "request_id" not in refused

    code, out, err = await devctl(tmp_path, gateway, "request", "submit", "--from", str(batch))
    assert code == 1, err
    for row in first[:2]:
        line = next(line for line in out.splitlines() if row["request_id"] in line)
        assert "already submitted" in line
    assert "PAO-API-006" in out
    assert "2 already submitted, 1 refused" in out
    assert "Traceback" not in err


async def test_a_csv_batch_types_each_cell_by_the_items_form(
    gateway: str, store: EventStore, tmp_path: Path
) -> None:
    app = f"c{uuid.uuid4().hex[:8]}"
    batch = tmp_path / "queues.csv"
    batch.write_text(
        "item_id,idempotency_key,inputs.application,inputs.queue,inputs.environment,"
        "inputs.fifo,inputs.visibility_timeout_seconds,inputs.content_based_deduplication\n"
        f"sqs-queue,{app}-1,{app},jobs,dev,true,60,false\n"
        f"sqs-queue,{app}-2,{app},logs,staging,,,\n"
    )

    code, out, err = await devctl(
        tmp_path, gateway, "-o", "json", "request", "submit", "--from", str(batch)
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["result"] for r in rows] == ["submitted", "submitted"]

    submitted = await store.read_stream(stream_of(rows[0]["request_id"]))
    assert submitted[0].data["inputs"] == {
        "application": app,
        "queue": "jobs",
        "environment": "dev",
        "fifo": True,
        "visibility_timeout_seconds": 60,
        "content_based_deduplication": False,
    }


async def test_a_file_with_a_wrong_type_is_refused_whole_and_sends_nothing(
    gateway: str, tmp_path: Path
) -> None:
    app = f"w{uuid.uuid4().hex[:8]}"
    batch = tmp_path / "queues.csv"
    batch.write_text(
        "item_id,inputs.application,inputs.queue,inputs.environment,inputs.retention_days\n"
        f"sqs-queue,{app},good,dev,4\n"
        f"sqs-queue,{app},bad,dev,a week\n"
    )

    code, out, err = await devctl(tmp_path, gateway, "request", "submit", "--from", str(batch))

    assert code == 2
    assert "PAO-CLI-004" in err
    assert "row 2 inputs.retention_days" in err
    assert "'a week' is not an integer" in err
    assert "nothing was sent" in err
    assert out == ""

    # The good row's key comes from the file's name and its content: had it been sent, the
    # fixed file would answer "already submitted".
    batch.write_text(batch.read_text().replace("a week", "7"))
    code, out, err = await devctl(
        tmp_path, gateway, "-o", "json", "request", "submit", "--from", str(batch)
    )
    assert code == 0, err
    assert [r["result"] for r in json.loads(out)] == ["submitted", "submitted"]

    broken = tmp_path / "broken.yaml"
    broken.write_text("- item_id: sqs-queue\n  inputs: {application: [\n")
    code, _, err = await devctl(tmp_path, gateway, "request", "submit", "--from", str(broken))
    assert code == 2
    assert "not valid YAML at line" in err
    assert "Traceback" not in err


async def test_abort_and_retry_from_a_file_report_each_request(
    gateway: str, tmp_path: Path
) -> None:
    app = f"a{uuid.uuid4().hex[:8]}"
    batch = tmp_path / "queues.yaml"
    batch.write_text(
        json.dumps([{"item_id": "sqs-queue", "inputs": queue(app, n)} for n in ("one", "two")])
    )
    code, out, err = await devctl(
        tmp_path, gateway, "-o", "json", "request", "submit", "--from", str(batch)
    )
    assert code == 0, err
    ids = [r["request_id"] for r in json.loads(out)]
    unknown = str(uuid.uuid4())
    listing = tmp_path / "stop.csv"
    listing.write_text(
        f"request_id,reason\n{ids[0]},project cancelled\n{ids[1]},\n{unknown},typo\n"
    )

    code, out, err = await devctl(
        tmp_path, gateway, "-o", "json", "request", "abort", "--from", str(listing)
    )

    assert code == 1, err
    aborted = json.loads(out)
    assert [(r["request_id"], r["result"]) for r in aborted] == [
        (ids[0], "aborted"),
        (ids[1], "aborted"),
        (unknown, "refused"),
    ]
    assert aborted[2]["code"] == "PAO-REQ-001"

    retry = tmp_path / "retry.yaml"
    retry.write_text(f"- {ids[0]}\n")
    code, out, err = await devctl(tmp_path, gateway, "request", "retry", "--from", str(retry))
    assert code == 1
    line = next(line for line in out.splitlines() if ids[0] in line)
    assert "refused" in line


async def test_export_reads_every_page_and_round_trips_as_csv_and_json(
    projected: Stack, tmp_path: Path
) -> None:
    app = f"e{uuid.uuid4().hex[:8]}"
    batch = tmp_path / "topics.yaml"
    rows = [{"application": app, "topic": f"t{n}x", "environment": "dev"} for n in range(5)]
    batch.write_text(json.dumps([{"item_id": "sns-topic", "inputs": r} for r in rows]))
    code, out, err = await devctl(
        tmp_path, projected.url, "-o", "json", "request", "submit", "--from", str(batch)
    )
    assert code == 0, err
    submitted = sorted(r["request_id"] for r in json.loads(out))
    await eventually(
        lambda: _all_listed(projected.url, len(submitted)), what="the requests in the read model"
    )

    code, out, err = await devctl(
        tmp_path, projected.url, "request", "export", "--item", "sns-topic", "--page-size", "2"
    )
    assert code == 0, err
    from_csv = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["request_id"] for r in from_csv) == submitted
    assert {(r["item_id"], r["requester"]) for r in from_csv} == {("sns-topic", "dana")}

    target = tmp_path / "export.json"
    code, out, err = await devctl(
        tmp_path,
        projected.url,
        "request",
        "export",
        "--item",
        "sns-topic",
        "--format",
        "json",
        "--page-size",
        "3",
        "--file",
        str(target),
    )
    assert code == 0, err
    assert out == ""
    assert "exported 5 request(s)" in err
    from_json = json.loads(target.read_text())
    assert [r["request_id"] for r in from_json] == [r["request_id"] for r in from_csv]
    assert [r["created_at"] for r in from_json] == sorted(r["created_at"] for r in from_json)
    assert [r["status"] for r in from_json] == [r["status"] for r in from_csv]


async def _all_listed(endpoint: str, count: int) -> bool:
    return await total_requests(endpoint, "sns-topic") == count
