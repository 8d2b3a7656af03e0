"""A secret a Terraform action uses stays out of what PAO stores, however short it is: a module
that prints it and fails with it in the error leaves it in no row and no log line."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
import pytest_asyncio
import structlog
from test_request_flow import api, status_becomes, submit
from test_rest_action import rows_holding

from conftest import REPO, fresh_database
from pao.shared.keystore import KeyStore
from pao.shared.secrets import env_name
from pao.shared.settings import Settings
from support.stack import Stack, running_stack

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH"),
]

SERVICES = ("gateway", "relay", "projector", "request", "fulfillment")
SECRET_PATH = "/pao/tests/terraform-short-key"

ITEM = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: key-check
  name: Key check
  category: security
  owner: team-platform
  version: 1.0.0
  description: Checks a key with a module that prints it.
form:
  schema:
    type: object
    required: [name]
    properties:
      name: {type: string, pattern: "^[a-z][a-z0-9-]{2,40}$"}
    examples: [{name: orders}]
secrets:
  key: {path: /pao/tests/terraform-short-key, description: The key to check.}
fulfillment:
  mode: automated
  actions:
    - name: check
      type: terraform
      terraform:
        module: modules/keycheck
        variables:
          name: "{{ inputs.name }}"
          key: "{{ secrets.key }}"
"""

# The same key kept by a resource, on an action that waits for an approval after its plan.
RECORD_ITEM = (
    ITEM.replace("key-check", "key-record")
    .replace("name: Key check", "name: Key record")
    .replace("modules/keycheck", "modules/keyrecord")
    .replace(
        "      type: terraform\n",
        "      type: terraform\n      approval: {approvers: {teams: [team-security]}}\n",
    )
)
RECORD_MODULE = """
variable "name" {
  type = string
}

variable "key" {
  type = string
}

resource "terraform_data" "record" {
  input = {
    name = var.name
    key  = var.key
  }
}
"""

# A module whose plain output repeats the key.
ECHO_ITEM = (
    ITEM.replace("key-check", "key-echo")
    .replace("name: Key check", "name: Key echo")
    .replace("modules/keycheck", "modules/keyecho")
    .replace(
        '          key: "{{ secrets.key }}"\n',
        '          key: "{{ secrets.key }}"\n        outputs: [echo]\n',
    )
)
ECHO_MODULE = """
variable "name" {
  type = string
}

variable "key" {
  type = string
}

resource "terraform_data" "echo" {
  input = var.name
}

output "echo" {
  value = "${terraform_data.echo.output} uses ${var.key}"
}
"""

# The module does not mark its variable sensitive, so Terraform shows the value as it pleases.
MODULE = """
variable "name" {
  type = string
}

variable "key" {
  type = string
}

resource "terraform_data" "key" {
  input = var.name
  provisioner "local-exec" {
    command = "echo checking key $KEY; exit 3"
    environment = {
      KEY = var.key
    }
  }
}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("terraform-secrets")
    catalog = root / "catalog"
    shutil.copytree(REPO / "catalog" / "schema", catalog / "schema")
    (catalog / "security").mkdir()
    (catalog / "security" / "key-check.yaml").write_text(ITEM)
    (catalog / "security" / "key-record.yaml").write_text(RECORD_ITEM)
    (catalog / "security" / "key-echo.yaml").write_text(ECHO_ITEM)
    modules = (("keycheck", MODULE), ("keyrecord", RECORD_MODULE), ("keyecho", ECHO_MODULE))
    for name, module in modules:
        (catalog / "modules" / name).mkdir(parents=True)
        (catalog / "modules" / name / "main.tf").write_text(module)
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "catalog_dir": catalog,
                "secrets_provider": "env",
            }
        )
        async with running_stack(own, keys, services=SERVICES, data_dir=root / "state") as running:
            yield running


def forms_of(secret: str) -> list[str]:
    raw = secret.encode()
    encoded = base64.b64encode(raw).decode()
    return [secret, encoded, quote(secret, safe=""), json.dumps(secret)[1:-1]]


async def test_a_three_character_secret_in_a_terraform_error_is_stored_nowhere(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "Zx!"
    monkeypatch.setenv(env_name(SECRET_PATH), secret)
    caplog.set_level(logging.DEBUG)
    name = f"key-{uuid.uuid4().hex[:6]}"

    with structlog.testing.capture_logs() as logged:
        request_id = await submit(stack, "key-check", {"name": name})
        await status_becomes(stack, request_id, "failed")
    detail = await api(stack, "GET", f"/requests/{request_id}")
    logs = await api(stack, "GET", f"/requests/{request_id}/logs")

    (check,) = [a for a in detail["actions"] if a["name"] == "check"]
    assert "local-exec provisioner error" in check["error"]
    assert "checking key ***" in check["error"]
    messages = [e.get("message") or "" for e in logs["entries"]]
    assert any("checking key ***" in m for m in messages)
    needles = forms_of(secret)
    assert await rows_holding(stack.pool, needles) == []
    out, err = capfd.readouterr()
    text = "\n".join([out, err, caplog.text, *(json.dumps(e, default=str) for e in logged)])
    assert [n for n in needles if n in text] == []


async def test_a_plan_shows_a_secret_in_a_plain_variable_masked(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Qj?"
    monkeypatch.setenv(env_name(SECRET_PATH), secret)
    name = f"rec-{uuid.uuid4().hex[:6]}"

    request_id = await submit(stack, "key-record", {"name": name})
    await status_becomes(stack, request_id, "awaiting_approval")
    plans = await api(stack, "GET", f"/requests/{request_id}/plan")

    ((change,),) = [plan["changes"] for plan in plans["plans"]]
    (attribute,) = [a for a in change["attributes"] if a["name"] == "input"]
    assert attribute["after"] == {"name": name, "key": "***"}
    assert await rows_holding(stack.pool, forms_of(secret)) == []


async def test_a_plain_output_that_repeats_a_secret_is_recorded_masked(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Kv#"
    monkeypatch.setenv(env_name(SECRET_PATH), secret)
    name = f"echo-{uuid.uuid4().hex[:6]}"

    request_id = await submit(stack, "key-echo", {"name": name})
    await status_becomes(stack, request_id, "completed")
    detail = await api(stack, "GET", f"/requests/{request_id}")

    (check,) = [a for a in detail["actions"] if a["name"] == "check"]
    assert check["outputs"]["echo"] == f"{name} uses ***"
