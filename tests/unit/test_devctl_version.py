"""Which servers a devctl talks to: the rule `devctl version` warns about."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pao.devctl.main import client_version
from pao.devctl.version import API_VERSION, MIN_SERVER_VERSION, __version__, server_mismatch

CLI_PYPROJECT = Path(__file__).resolve().parents[2] / "cli/pyproject.toml"


@pytest.mark.parametrize(
    "server",
    [MIN_SERVER_VERSION, __version__, "99.0.0", f"{MIN_SERVER_VERSION}+g1234", "99.1.0rc1"],
)
def test_a_server_at_or_above_the_minimum_on_the_same_api_fits(server: str) -> None:
    assert server_mismatch(server, API_VERSION) is None


def test_a_server_older_than_the_minimum_is_named_with_the_minimum() -> None:
    reason = server_mismatch("0.0.9", API_VERSION)
    assert reason is not None
    assert "0.0.9" in reason
    assert MIN_SERVER_VERSION in reason
    assert "upgrade the server" in reason


def test_a_server_that_does_not_know_its_version_is_older_than_any() -> None:
    assert server_mismatch("0.0.0+unknown", API_VERSION) is not None


def test_another_api_version_does_not_fit_whatever_the_release() -> None:
    reason = server_mismatch("99.0.0", "v2")
    assert reason is not None
    assert "v2" in reason
    assert API_VERSION in reason


def test_a_server_without_api_version_is_judged_by_its_release() -> None:
    assert server_mismatch(__version__, None) is None


@pytest.mark.parametrize("server", [None, "", "latest"])
def test_an_unreadable_server_version_is_reported(server: str | None) -> None:
    reason = server_mismatch(server, API_VERSION)
    assert reason is not None
    assert "cannot compare" in reason


def test_the_version_is_written_once() -> None:
    project = tomllib.loads(CLI_PYPROJECT.read_text())["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert client_version() == __version__
