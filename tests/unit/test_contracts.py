"""Contracts: frozen envelope, well-formed unique error codes, topics that follow streams."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from pao.contracts import errors
from pao.contracts.envelope import EventEnvelope, NewEvent, stream_category
from pao.contracts.errors import ErrorDetail, PaoError
from pao.contracts.topics import ALL_TOPICS, topic_for_stream
from pao.devctl.errors import CliError
from pao.shared.keystore import KeyStore, KeyStoreError


def test_events_are_frozen() -> None:
    e = NewEvent(event_type="RequestSubmitted", data={"a": 1})
    with pytest.raises(pydantic.ValidationError):
        e.event_type = "Changed"  # type: ignore[misc]


def test_the_envelope_round_trips_through_json() -> None:
    e = NewEvent(event_type="RequestSubmitted", data={"a": 1})
    envelope = EventEnvelope(
        event_id=e.event_id,
        event_type=e.event_type,
        schema_version=1,
        stream_id="request-1",
        stream_version=1,
        global_position=7,
        occurred_at=e.occurred_at,
        data=e.data,
    )
    assert EventEnvelope.model_validate_json(envelope.model_dump_json()) == envelope


def test_every_error_code_is_well_formed_with_a_suggestion() -> None:
    for code, entry in errors.REGISTRY.items():
        assert re.fullmatch(r"PAO-[A-Z]+-\d{3}", code), code
        assert entry.suggestion.strip(), code
        assert entry.http_status == 0 or 400 <= entry.http_status < 600


def test_an_error_renders_the_envelope() -> None:
    error = PaoError(errors.INVALID_INPUT, details=[ErrorDetail(field="/inputs/name", message="x")])
    body = error.body("corr-9").model_dump()["error"]
    assert body["code"] == "PAO-API-006"
    assert body["details"][0]["field"] == "/inputs/name"
    assert body["suggestion"] == errors.INVALID_INPUT.suggestion
    assert body["correlation_id"] == "corr-9"


def test_streams_map_to_category_topics() -> None:
    assert stream_category("request-0b9f") == "request"
    assert topic_for_stream("request-0b9f") == "pao.request.events"
    assert topic_for_stream("catalog") == "pao.catalog.events"
    assert "pao.deadletter" in ALL_TOPICS


def test_the_cli_error_is_one_line_with_code_suggestion_and_correlation_id() -> None:
    line = CliError(
        "PAO-AUTH-005", "Signature does not match", "Check the secret key.", correlation_id="c-1"
    ).one_line()
    assert "\n" not in line
    assert line.startswith("error PAO-AUTH-005: Signature does not match.")
    assert line.endswith("(correlation id c-1)")


def test_a_broken_key_store_names_the_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("- access_key_id: PAOKEY0001\n  user: dana\n")
    with pytest.raises(KeyStoreError, match=r"keys.yaml: entry 0"):
        KeyStore.from_file(path)


def test_the_api_docs_carry_the_current_error_table() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert errors.markdown_table() in docs, "regenerate it: python -m pao.contracts.errors"
