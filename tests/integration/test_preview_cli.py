"""devctl preview, validate request and test variables, as a developer runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_catalog_cli import profile, run

from conftest import BIN

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def run_with_stdin(
    argv: list[str], stdin: str, env: dict[str, str], cwd: Path
) -> tuple[int, str, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_preview_form_shows_fields_and_what_a_condition_reveals(
    gateway: str, tmp_path: Path
) -> None:
    code, out, err = await run(
        BIN / "devctl", "preview", "form", "eks-application", env=profile(tmp_path, gateway)
    )
    assert code == 0, err
    assert "Application name" in out
    assert "one of dev, staging, prod" in out
    assert "shown when a condition applies: hostname" in out


async def test_interactive_preview_asks_each_visible_field_and_writes_inputs(
    gateway: str, tmp_path: Path
) -> None:
    answers = (
        "\n".join(
            [
                "web-shop",
                "prod",
                "registry.example.com/shop:1.0",
                "1",
                "3",
                "",
                "",
                "yes",
                "shop.example.com",
                "CC-0001",
            ]
        )
        + "\n"
    )
    code, out, err = await run_with_stdin(
        [
            str(BIN / "devctl"),
            "preview",
            "form",
            "eks-application",
            "--interactive",
            "--save",
            "shop.yaml",
        ],
        answers,
        profile(tmp_path, gateway),
        tmp_path,
    )
    assert code == 0, err + out
    assert "at least 3" in err  # replicas 1 was refused in prod, then 3 accepted
    saved = yaml.safe_load((tmp_path / "shop.yaml").read_text())
    assert saved == {
        "app_name": "web-shop",
        "environment": "prod",
        "container_image": "registry.example.com/shop:1.0",
        "replicas": 3,
        "cpu": "500m",
        "memory": "1Gi",
        "ingress_enabled": True,
        "hostname": "shop.example.com",
        "cost_center": "CC-0001",
    }

    code, out, err = await run(
        BIN / "devctl",
        "validate",
        "request",
        "eks-application",
        "--inputs",
        tmp_path / "shop.yaml",
        env=profile(tmp_path, gateway),
    )
    assert code == 0, err
    assert "the request is valid" in out
    assert "pod_role (rest): runs" in out
    assert "fargate_profile (rest): runs" in out


async def test_validate_request_lists_every_problem_and_exits_1(
    gateway: str, tmp_path: Path
) -> None:
    code, _, err = await run(
        BIN / "devctl",
        "validate",
        "request",
        "postgresql-rds",
        "--set",
        "db_name=orders",
        "--set",
        "environment=prod",
        "--set",
        "instance_size=huge",
        "--set",
        "multi_az=false",
        env=profile(tmp_path, gateway),
    )
    assert code == 1
    assert "/inputs/instance_size" in err
    assert "/inputs/multi_az: must be true" in err
    assert "/inputs/owner_email: owner_email is required" in err


async def test_test_variables_for_a_template_and_for_an_action(
    gateway: str, tmp_path: Path
) -> None:
    context = tmp_path / "context.yaml"
    context.write_text("inputs: {name: Orders API}\nuser: {id: dana}\n")
    env = profile(tmp_path, gateway)
    code, out, err = await run(
        BIN / "devctl",
        "test",
        "variables",
        "--template",
        "{{ inputs.name | slug }}/{{ user.id }}",
        "--context",
        context,
        env=env,
    )
    assert code == 0, err
    assert 'output (str): "orders-api/dana"' in out
    assert "filters: slug" in out
    code, out, _ = await run(
        BIN / "devctl",
        "test",
        "variables",
        "--template",
        "{{ inputs.nam }}",
        "--context",
        context,
        env=env,
    )
    assert code == 1
    assert "!! inputs.nam" in out
    code, out, err = await run(
        BIN / "devctl",
        "-o",
        "json",
        "test",
        "variables",
        "--item",
        "postgresql-rds",
        "--action",
        "create_ticket",
        env=env,
    )
    assert code == 0, err
    assert json.loads(out)["rendered"]["project"] == "DBA"
