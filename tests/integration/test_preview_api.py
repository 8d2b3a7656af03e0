"""Phase 3 over the API: validate a request, preview a form, test variables; secrets stay hidden."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import signed_client
from pao.devctl.errors import CliError

pytestmark = pytest.mark.asyncio(loop_scope="session")

EKS_INPUTS = {
    "app_name": "orders-api",
    "environment": "prod",
    "cost_center": "CC-1042",
    "replicas": 3,
    "container_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/orders:1.4.2",
    "ingress_enabled": True,
    "hostname": "orders.example.com",
}


async def post(gateway: str, path: str, body: Any) -> Any:
    client = signed_client(gateway)
    try:
        return await asyncio.to_thread(client.request, "POST", path, body=body)
    finally:
        client.close()


async def test_a_valid_request_renders_every_action(gateway: str) -> None:
    answer = await post(
        gateway, "/validate/request", {"item_id": "eks-application", "inputs": EKS_INPUTS}
    )
    assert answer["valid"] is True
    assert [a["name"] for a in answer["actions"]] == ["pod_role", "fargate_profile"]
    role, profile = (a["spec"] for a in answer["actions"])
    assert role["form"]["RoleName"] == "eks-orders-api-prod-pods"
    assert profile["url"] == "/clusters/platform-prod/fargate-profiles"
    assert profile["body"]["selectors"] == [{"namespace": "orders-api"}]
    assert profile["body"]["tags"]["ingress"] == "orders.example.com"
    # an earlier action's output is a placeholder until it runs
    assert profile["body"]["podExecutionRoleArn"] == "<pod_role.role_arn>"


async def test_every_problem_comes_back_at_once_with_pointers(gateway: str) -> None:
    inputs = {**EKS_INPUTS, "replicas": 1, "cost_center": "1042"}
    del inputs["hostname"]
    answer = await post(
        gateway, "/validate/request", {"item_id": "eks-application", "inputs": inputs}
    )
    assert answer["valid"] is False
    pointers = {p["pointer"] for p in answer["problems"]}
    assert pointers == {"/inputs/hostname", "/inputs/replicas", "/inputs/cost_center"}


async def test_typed_terraform_variables_and_masked_outputs(gateway: str) -> None:
    answer = await post(
        gateway,
        "/validate/request",
        {
            "item_id": "postgresql-standard",
            "inputs": {
                "db_name": "orders",
                "environment": "prod",
                "connection_limit": 200,
                "owner_email": "orders@example.com",
            },
        },
    )
    assert answer["valid"] is True, answer
    terraform = answer["actions"][0]["spec"]
    assert terraform["variables"]["connection_limit"] == 200  # a number stays a number
    assert terraform["variables"]["labels"]["environment"] == "prod"
    assert terraform["variables"]["labels"]["requested_by"] == "dana"  # the caller's scope


async def test_an_action_whose_condition_is_false_is_shown_but_not_rendered(
    gateway: str,
) -> None:
    answer = await post(
        gateway,
        "/validate/request",
        {
            "item_id": "parameterstore-standard",
            "inputs": {
                "application": "orders-api",
                "environment": "prod",
                "parameter_name": "stripe_key",
                "parameter_type": "SecureString",
                "kms_key_alias": "alias/orders",
            },
        },
    )
    assert answer["valid"] is True, answer
    plain, secure, _ = answer["actions"]
    assert (plain["name"], plain["run"], plain["spec"]) == ("put_parameter", False, None)
    assert secure["run"] is True
    assert secure["spec"]["body"]["KeyId"] == "alias/orders"
    assert secure["spec"]["body"]["Overwrite"] is False


async def test_an_unknown_item_or_a_bad_body_is_named(gateway: str) -> None:
    with pytest.raises(CliError) as caught:
        await post(gateway, "/validate/request", {"item_id": "mainframe"})
    assert caught.value.code == "PAO-CAT-001"
    with pytest.raises(CliError) as caught:
        await post(gateway, "/validate/request", {"inputs": {}})
    assert caught.value.code == "PAO-API-006"
    assert caught.value.details[0]["field"] == "/item_id"


async def test_the_form_preview_shows_conditional_fields_as_they_apply(gateway: str) -> None:
    closed = await post(
        gateway, "/preview/form", {"item_id": "eks-application", "inputs": {"environment": "dev"}}
    )
    fields = {f["name"]: f for f in closed["fields"]}
    assert [f["name"] for f in closed["fields"]][:3] == [
        "app_name",
        "environment",
        "container_image",
    ]
    assert fields["hostname"]["visible"] is False
    assert fields["replicas"]["constraints"] == {"minimum": 1, "maximum": 20}
    assert fields["environment"]["enum"] == ["dev", "staging", "prod"]
    assert fields["cpu"]["default"] == "500m"
    assert fields["app_name"]["label"] == "Application name"

    opened = await post(
        gateway,
        "/preview/form",
        {"item_id": "eks-application", "inputs": {"environment": "prod", "ingress_enabled": True}},
    )
    fields = {f["name"]: f for f in opened["fields"]}
    assert fields["hostname"]["visible"] is True
    assert fields["hostname"]["required"] is True
    assert fields["replicas"]["constraints"]["minimum"] == 3
    assert opened["complete"] is False


async def test_a_field_a_condition_forbids_disappears(gateway: str) -> None:
    answer = await post(
        gateway,
        "/preview/form",
        {"item_id": "parameterstore-standard", "inputs": {"parameter_type": "SecureString"}},
    )
    fields = {f["name"]: f for f in answer["fields"]}
    assert fields["value"]["visible"] is False
    assert fields["kms_key_alias"]["required"] is True


async def test_variables_phases_for_a_template(gateway: str) -> None:
    answer = await post(
        gateway,
        "/test/variables",
        {
            "template": "{{ inputs.name | slug | upper }}-{{ user.id }}",
            "context": {"inputs": {"name": "Orders API"}, "user": {"id": "dana"}},
        },
    )
    assert answer["parse"]["ok"] is True
    assert [r["path"] for r in answer["parse"]["references"]] == ["inputs.name", "user.id"]
    assert [f["name"] for f in answer["parse"]["filters"]] == ["slug", "upper"]
    assert all(r["resolved"] for r in answer["resolve"]["references"])
    assert answer["output"] == "ORDERS-API-dana"


async def test_variables_report_errors_with_positions(gateway: str) -> None:
    broken = await post(
        gateway, "/test/variables", {"template": "ok\n{{ inputs.x }", "context": {}}
    )
    assert broken["parse"]["errors"][0]["line"] == 2
    assert broken["parse"]["errors"][0]["column"] >= 1
    missing = await post(
        gateway,
        "/test/variables",
        {"template": "{{ inputs.nope | shout }}", "context": {"inputs": {}}},
    )
    messages = [e["message"] for e in missing["resolve"]["errors"]]
    assert "inputs.nope is not in the context" in messages
    assert "unknown filter 'shout'" in messages
    assert missing["substitute"]["ok"] is False


async def test_variables_for_an_item_action_check_declarations(gateway: str) -> None:
    answer = await post(
        gateway,
        "/test/variables",
        {
            "item_id": "parameterstore-standard",
            "action": "put_parameter",
            "context": {
                "inputs": {
                    "application": "shop",
                    "environment": "dev",
                    "parameter_name": "flags",
                    "parameter_type": "String",
                    "value": "x",
                }
            },
        },
    )
    assert answer["type"] == "rest"
    assert answer["rendered"]["body"]["Name"] == "/shop/dev/flags"
    name = next(t for t in answer["templates"] if t["field"].endswith("/body/Name"))
    assert name["resolve"]["ok"] is True


async def test_a_planted_secret_never_comes_back(gateway: str) -> None:
    secret = "hunter2-very-secret-value"
    answer = await post(
        gateway,
        "/test/variables",
        {
            "template": "token={{ secrets.api_token }} copy={{ inputs.echo }}",
            "context": {"secrets": {"api_token": secret}, "inputs": {"echo": secret}},
        },
    )
    text = str(answer)
    assert secret not in text
    assert "token=***" in answer["output"]


async def test_variables_refuse_a_template_that_builds_a_huge_value(gateway: str) -> None:
    started = asyncio.get_running_loop().time()
    answer = await post(
        gateway,
        "/test/variables",
        {"template": "{{ range(170) | join('y' * 60000) | length }}", "context": {}},
    )
    assert asyncio.get_running_loop().time() - started < 2
    assert answer["substitute"]["ok"] is False
    assert answer["output"] is None
    message = answer["substitute"]["errors"][0]["message"]
    assert message == "refused by the sandbox: join() of 10140170 characters; the limit is 262144"
