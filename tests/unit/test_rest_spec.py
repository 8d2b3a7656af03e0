"""REST actions without a network: what the catalog refuses, and how answers and hosts are read."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from pao.fulfillment.context import secret_forms
from pao.fulfillment.rest import holds, host_allowed, xml_document
from pao.fulfillment.retry_after import retry_after
from pao.spec.rendering import redact_value
from pao.spec.validation import item_problems

ITEM: dict[str, Any] = {
    "apiVersion": "pao.dev/v1",
    "kind": "CatalogItem",
    "metadata": {
        "id": "dns-record",
        "name": "DNS record",
        "category": "networking",
        "owner": "team-platform",
        "version": "1.0.0",
        "description": "A DNS record, created through the DNS API.",
    },
    "form": {
        "schema": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}},
            "examples": [{"name": "shop"}],
        }
    },
    "fulfillment": {
        "mode": "automated",
        "actions": [
            {
                "name": "create_record",
                "type": "rest",
                "rest": {
                    "method": "POST",
                    "url": "https://dns.example.com/records",
                    "headers": {"X-Record": "{{ inputs.name }}"},
                    "body": {"name": "{{ inputs.name }}"},
                },
            }
        ],
    },
}


def with_rest(**changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(ITEM)
    item["fulfillment"]["actions"][0]["rest"].update(changes)
    return item


def rules(item: dict[str, Any]) -> dict[str, str]:
    return {p.pointer: p.rule for p in item_problems(item)}


REST = "/fulfillment/actions/0/rest"


def test_a_plain_rest_action_is_valid() -> None:
    assert rules(ITEM) == {}


@pytest.mark.parametrize("name", ["X Record", "X-Récord", "X:Record", ""])
def test_a_header_name_that_is_no_http_token_is_refused(name: str) -> None:
    assert rules(with_rest(headers={name: "v"})) == {f"{REST}/headers/{name}": "rest-header"}


@pytest.mark.parametrize("value", ["a\nX-Admin: true", "{{ inputs.name }}\r\n", "line\r"])
def test_a_header_value_template_with_a_line_break_is_refused(value: str) -> None:
    assert rules(with_rest(headers={"X-Record": value})) == {
        f"{REST}/headers/X-Record": "rest-header"
    }


def test_form_and_body_together_are_refused() -> None:
    assert rules(with_rest(form={"Action": "CreateTopic"})) == {f"{REST}/form": "rest-body"}


@pytest.mark.parametrize(
    "poll",
    [
        {"until": [{"pointer": "/done", "equals": True}]},
        {
            "url": "https://dns.example.com/s",
            "url_header": "Location",
            "until": [{"pointer": "/d", "exists": True}],
        },
    ],
)
def test_a_poll_needs_exactly_one_status_url(poll: dict[str, Any]) -> None:
    assert rules(with_rest(poll=poll)) == {f"{REST}/poll": "rest-poll"}


def test_a_path_url_needs_sigv4() -> None:
    assert rules(with_rest(url="/records")) == {f"{REST}/url": "rest-url"}
    signed = with_rest(url="/", auth={"type": "aws_sigv4", "service": "sns"})
    del signed["fulfillment"]["actions"][0]["rest"]["headers"]
    assert rules(signed) == {}


def test_poll_outputs_are_outputs_of_the_action() -> None:
    item = with_rest(
        poll={
            "url_header": "Location",
            "until": [{"pointer": "/state", "equals": "done"}],
            "outputs": {"record_id": "/id"},
        }
    )
    item["fulfillment"]["actions"].append(
        {
            "name": "announce",
            "type": "rest",
            "rest": {
                "method": "POST",
                "url": "https://chat.example.com/{{ outputs.create_record.record_id }}",
            },
        }
    )
    assert rules(item) == {}
    later = item["fulfillment"]["actions"][1]["rest"]
    later["url"] = "https://chat.example.com/{{ outputs.create_record.nope }}"
    assert rules(item) == {"/fulfillment/actions/1/rest/url": "template-reference"}


def test_the_older_expected_status_still_validates() -> None:
    assert rules(with_rest(expected_status=[201])) == {}


@pytest.mark.parametrize(
    ("url", "patterns", "allowed"),
    [
        ("https://api.example.com/x", ["api.example.com"], True),
        ("https://api.example.com:8443/x", ["api.example.com"], False),
        ("https://api.example.com:8443/x", ["api.example.com:8443"], True),
        ("http://api.example.com/x", ["api.example.com:80"], True),
        ("https://a.b.example.com/x", ["*.example.com"], True),
        ("https://example.com/x", ["*.example.com"], False),
        ("https://evil-example.com/x", ["*.example.com"], False),
        ("http://127.0.0.1:5123/x", ["127.0.0.1:*"], True),
        ("http://127.0.0.2:5123/x", ["127.0.0.1:*"], False),
        ("http://[::1]:5123/x", ["[::1]:*"], True),
        ("https://API.Example.com/x", ["api.example.com"], True),
        ("https://api.example.com/x", [], False),
    ],
)
def test_hosts_match_the_allow_list_by_host_and_port(
    url: str, patterns: list[str], allowed: bool
) -> None:
    assert host_allowed(url, patterns) is allowed


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("3", now) == 3.0
    assert retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after("inf", now) is None
    assert retry_after(None, now) is None


def test_an_xml_answer_reads_as_a_dict() -> None:
    answer = b"""<?xml version="1.0"?>
    <ListTopicsResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">
      <ListTopicsResult>
        <Topics>
          <member><TopicArn>arn:a</TopicArn></member>
          <member><TopicArn>arn:b</TopicArn></member>
        </Topics>
        <NextToken/>
      </ListTopicsResult>
    </ListTopicsResponse>"""
    document = xml_document(answer)
    assert document == {
        "ListTopicsResponse": {
            "ListTopicsResult": {
                "Topics": {"member": [{"TopicArn": "arn:a"}, {"TopicArn": "arn:b"}]},
                "NextToken": "",
            }
        }
    }
    assert holds(
        document, {"pointer": "/ListTopicsResponse/ListTopicsResult/NextToken", "exists": True}
    )
    assert holds(
        document,
        {
            "pointer": "/ListTopicsResponse/ListTopicsResult/Topics/member/1/TopicArn",
            "equals": "arn:b",
        },
    )


def test_conditions_compare_xml_strings_with_json_values() -> None:
    assert holds({"n": "2", "ok": "true"}, {"pointer": "/n", "equals": 2})
    assert holds({"n": "2", "ok": "true"}, {"pointer": "/ok", "equals": True})
    assert not holds({"n": 3}, {"pointer": "/n", "equals": 2})
    assert holds({"n": 3}, {"pointer": "/m", "exists": False})
    assert not holds({"n": 3}, {"pointer": "/m", "equals": None})


def test_every_form_of_a_secret_is_redacted() -> None:
    secret = 's3cr3t/with+odd=chars&"quotes"'
    forms = secret_forms([secret, "***"])
    echoed = {
        "raw": f"x{secret}y",
        "b64": base64.b64encode(secret.encode()).decode(),
        "url": "q=" + "s3cr3t%2Fwith%2Bodd%3Dchars%26%22quotes%22",
        "plus": "s3cr3t%2Fwith%2Bodd%3Dchars%26%22quotes%22",
        "json": '{"token": "s3cr3t/with+odd=chars&\\"quotes\\""}',
    }
    cleaned = redact_value(echoed, forms)
    assert all("s3cr3t" not in v and "czNjcjN0" not in v for v in cleaned.values()), cleaned
    assert "***" not in secret_forms(["***"])
