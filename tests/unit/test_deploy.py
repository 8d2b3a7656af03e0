"""The deployment files parse and run every service (Docker itself does not run here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pao.shared.keystore import KeyStore
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
