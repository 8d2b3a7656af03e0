"""The deployment files parse and run every service (Docker itself does not run here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from pao.stack.console import EXAMPLE_MARKER, load_keys
from pao.stack.keys import new_key_store
from pao.stack.runtime import SERVICES

REPO = Path(__file__).resolve().parents[2]


def test_compose_names_kafka_postgres_and_every_pao_service() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "kafka", "migrate"} <= services.keys()
    for name in SERVICES:
        assert services[name]["command"] == ["pao", "serve", name]
        env = services[name]["environment"]
        assert env["PAO_DATABASE_URL"].startswith("postgresql://")
        assert env["PAO_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"] == "postgres:16"


def test_the_example_key_store_loads() -> None:
    keys = KeyStore.from_file(REPO / "deploy" / "keys.example.yaml")
    assert len(keys) == 2


def test_the_dockerfile_builds_one_image_for_every_service() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert 'CMD ["pao", "serve", "gateway"]' in dockerfile
    assert "uv sync --frozen" in dockerfile


def test_the_example_notification_routing_loads() -> None:
    from pao.notification.routing import load_routing

    routing = load_routing(REPO / "deploy" / "notifications.example.yaml")
    assert set(routing.channels) == {"ops-webhook", "data-slack", "mail"}


def test_compose_ships_no_key_or_secret_of_its_own() -> None:
    text = (REPO / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert EXAMPLE_MARKER not in text
    assert "keys.example.yaml" not in text
    assert services["keys"]["command"] == ["pao", "keys", "init", "/etc/pao/keys/keys.yaml"]
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["PAO_KEYS_FILE"] == "/etc/pao/keys/keys.yaml"
        assert env["PAO_GITHUB_WEBHOOK_SECRET"] == "${PAO_GITHUB_WEBHOOK_SECRET:-}"
        assert services[name]["depends_on"]["keys"]["condition"] == (
            "service_completed_successfully"
        )


def test_serving_with_the_example_key_store_is_refused() -> None:
    settings = Settings(keys_file=REPO / "deploy" / "keys.example.yaml")
    with pytest.raises(typer.Exit):
        load_keys(settings)


@pytest.mark.parametrize("name", ["github_webhook_secret", "apigateway_secret"])
def test_serving_with_an_example_shared_secret_is_refused(name: str) -> None:
    settings = Settings(**{name: f"{EXAMPLE_MARKER}-webhook-secret"})
    with pytest.raises(typer.Exit):
        load_keys(settings)


def test_a_new_key_store_holds_one_admin_key_drawn_afresh() -> None:
    first, second = new_key_store(), new_key_store()
    (entry,) = KeyStore([KeyEntry.model_validate(k) for k in first["keys"]]).entries()
    assert entry.identity().is_admin
    assert not entry.secret_access_key.get_secret_value().startswith(EXAMPLE_MARKER)
    assert len(entry.secret_access_key.get_secret_value()) >= 40
    assert first["keys"][0]["secret_access_key"] != second["keys"][0]["secret_access_key"]
    assert first["keys"][0]["access_key_id"] != second["keys"][0]["access_key_id"]
