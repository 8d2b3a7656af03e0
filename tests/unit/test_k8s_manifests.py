"""The Kubernetes manifests (deploy/k8s): each overlay renders, validates against the Kubernetes
schemas, runs every PAO process hardened and probed, keeps secrets out of its ConfigMaps,
scales consumers no further than their partitions, and passes checkov's policies."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import pao.shared.metrics  # noqa: F401 - registers PAO's metric families
from pao.contracts.topics import topic_for_category
from pao.shared.settings import Settings
from pao.stack.runtime import SERVICES
from support import keda
from support.kustomize import render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
FOLDERS = ("base", "overlays/dev", "overlays/prod")
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
KUBERNETES_VERSION = "1.37.0"
#: Deployments whose consumers a ScaledObject scales; the relay and projector are not scaled.
CONSUMERS = ("request", "fulfillment", "notification")

Document = dict[str, Any]


def _kubectl_kustomize() -> str | None:
    """kubectl, when its kustomize understands `labels` and `patches` (v4 and later)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    shown = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    found = re.search(r"Kustomize Version: v(\d+)", shown)
    return kubectl if found and int(found.group(1)) >= 4 else None


KUBECTL = _kubectl_kustomize()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Document]]:
    """Each folder as kubectl renders it, or as tests/support/kustomize.py does without one."""
    if KUBECTL is None:
        return {folder: render(K8S / folder) for folder in FOLDERS}
    out = {}
    for folder in FOLDERS:
        text = subprocess.run(
            [KUBECTL, "kustomize", str(K8S / folder)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        out[folder] = [d for d in yaml.safe_load_all(text) if d]
    return out


def of_kind(documents: list[Document], kind: str) -> dict[str, Document]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def pod_spec(document: Document) -> Document:
    return document["spec"]["template"]["spec"]


def containers(document: Document) -> list[Document]:
    spec = pod_spec(document)
    return [*spec.get("initContainers", []), *spec["containers"]]


def config(documents: list[Document]) -> dict[str, str]:
    return of_kind(documents, "ConfigMap")["pao-config"]["data"]


def env_value(container: Document, config_data: dict[str, str], name: str) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == name:
            return entry.get("value")
    return config_data.get(name)


# The checks: each returns the problems it finds, so a test can also show that it fails.


def probe_problems(documents: list[Document]) -> list[str]:
    problems = []
    settings = config(documents)
    for name in SERVICES:
        deployment = of_kind(documents, "Deployment").get(f"pao-{name}")
        if deployment is None:
            problems.append(f"no Deployment pao-{name}")
            continue
        (main,) = pod_spec(deployment)["containers"]
        if name == "gateway":
            expected = {"livenessProbe": "/api/v1/health", "readinessProbe": "/api/v1/health/ready"}
            port = int(env_value(main, settings, "PAO_HTTP_PORT") or 8080)
        else:
            expected = {"livenessProbe": "/health", "readinessProbe": "/health/ready"}
            port = int(env_value(main, settings, "PAO_METRICS_PORT") or 0)
            if env_value(main, settings, "PAO_METRICS_HOST") != "0.0.0.0":  # noqa: S104
                problems.append(f"{name}: PAO_METRICS_HOST must be 0.0.0.0 for probes to reach it")
        ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
        for probe, path in expected.items():
            http = main.get(probe, {}).get("httpGet", {})
            if http.get("path") != path or ports.get(http.get("port")) != port:
                problems.append(f"{name}: {probe} must GET {path} on port {port}")
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get(
            "prometheus.io/port"
        ) != str(port):
            problems.append(f"{name}: Prometheus scrape annotations must name port {port}")
    return problems


def hardening_problems(documents: list[Document]) -> list[str]:
    problems = []
    workloads = {**of_kind(documents, "Deployment"), **of_kind(documents, "Job")}
    for workload_name, workload in workloads.items():
        spec = pod_spec(workload)
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{workload_name}: mounts a service account token")
        if spec.get("securityContext", {}).get("seccompProfile", {}).get("type") != (
            "RuntimeDefault"
        ):
            problems.append(f"{workload_name}: pod seccompProfile is not RuntimeDefault")
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in containers(workload):
            where = f"{workload_name}/{container['name']}"
            context = container.get("securityContext", {})
            wanted = {
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
            }
            for key, value in wanted.items():
                if context.get(key) is not value:
                    problems.append(f"{where}: securityContext.{key} must be {value}")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: must drop ALL capabilities")
            if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            for kind in ("requests", "limits"):
                if set(container.get("resources", {}).get(kind, {})) < {"cpu", "memory"}:
                    problems.append(f"{where}: needs cpu and memory {kind}")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if mounts.get("/tmp") not in empty_dirs:  # noqa: S108
                problems.append(f"{where}: /tmp must be an emptyDir")
            if container["name"] != "migrate" and mounts.get("/var/lib/pao") not in empty_dirs:
                problems.append(f"{where}: the data dir must be an emptyDir")
    return problems


#: Settings whose value is itself a secret (a *_SECRET path or the secrets provider is not).
SECRET_LIKE = re.compile(
    r"^PAO_(DATABASE_URL|DATABASE_READ_URL|TERRAFORM_STATE_URL|JIRA_TOKEN|CATALOG_GIT_TOKEN|"
    r"GITHUB_WEBHOOK_SECRET|APIGATEWAY_SECRET)$|PASSWORD",
    re.I,
)


def secret_problems(documents: list[Document]) -> list[str]:
    problems = [f"a Secret {d['metadata']['name']} is in the manifests" for d in documents
                if d["kind"] == "Secret"]  # fmt: skip
    for name, config_map in of_kind(documents, "ConfigMap").items():
        for key, value in (config_map.get("data") or {}).items():
            if SECRET_LIKE.search(key) or re.search(r"://[^/@\s]+:[^/@\s]+@", value):
                problems.append(f"ConfigMap {name}: {key} holds a secret")
    for workload in [
        *of_kind(documents, "Deployment").values(),
        *of_kind(documents, "Job").values(),
    ]:
        for container in containers(workload):
            for entry in container.get("env", []):
                if SECRET_LIKE.search(entry["name"]) and "secretKeyRef" not in entry.get(
                    "valueFrom", {}
                ):
                    problems.append(
                        f"{container['name']}: {entry['name']} is not a Secret reference"
                    )
    return problems


def consumed_topics() -> dict[str, dict[str, set[str]]]:
    """Per Deployment, each consumer group it runs and the topics that group reads."""
    from pao.fulfillment import definitions, intake
    from pao.notification import requests as notices
    from pao.request import lifecycle, process

    every_notice = SimpleNamespace(routing=SimpleNamespace(events=notices.NOTIFYING_EVENTS))
    groups = {
        "request": {
            process.CONSUMER: process.handlers(None),  # type: ignore[arg-type]
            lifecycle.CONSUMER: lifecycle.handlers(None),  # type: ignore[arg-type]
        },
        "fulfillment": {
            intake.CONSUMER: intake.HANDLERS,
            definitions.CONSUMER: definitions.HANDLERS,
        },
        "notification": {notices.CONSUMER: notices.handlers(every_notice)},  # type: ignore[arg-type]
    }
    return {
        service: {group: {topic_for_category(c.category) for c in handlers}
                  for group, handlers in by_group.items()}
        for service, by_group in groups.items()
    }  # fmt: skip


METRIC_NAME = re.compile(r"\b(pao_[a-z_]+)")


def scaling_problems(documents: list[Document]) -> list[str]:
    problems = []
    partitions = int(config(documents)["PAO_KAFKA_PARTITIONS"])
    scaled = of_kind(documents, "ScaledObject")
    known_metrics = {m.name for m in REGISTRY.collect()}
    for service, groups in consumed_topics().items():
        scaled_object = scaled.get(f"pao-{service}")
        if scaled_object is None:
            problems.append(f"{service}: no ScaledObject")
            continue
        spec = scaled_object["spec"]
        if spec["scaleTargetRef"]["name"] != f"pao-{service}":
            problems.append(f"{service}: the ScaledObject scales something else")
        if spec["maxReplicaCount"] > partitions:
            problems.append(
                f"{service}: maxReplicaCount {spec['maxReplicaCount']} is above the "
                f"{partitions} partitions of its topics"
            )
        if spec.get("minReplicaCount", 0) < 1:
            problems.append(f"{service}: scaling to zero would hide its own lag metric")
        kafka = {
            (t["metadata"]["consumerGroup"], t["metadata"]["topic"])
            for t in spec["triggers"]
            if t["type"] == "kafka"
        }
        wanted = {(group, topic) for group, topics in groups.items() for topic in topics}
        if kafka != wanted:
            problems.append(f"{service}: kafka triggers {sorted(kafka)} != {sorted(wanted)}")
        queries = [t["metadata"]["query"] for t in spec["triggers"] if t["type"] == "prometheus"]
        if not any("pao_consumer_lag_events" in q for q in queries):
            problems.append(f"{service}: no trigger on pao_consumer_lag_events")
        for query in queries:
            for metric in METRIC_NAME.findall(query):
                if metric not in known_metrics:
                    problems.append(f"{service}: {metric} is not a PAO metric")
    if "pao_jobs" not in " ".join(
        t["metadata"].get("query", "") for t in scaled.get("pao-fulfillment", {}).get(
            "spec", {}).get("triggers", [])
    ):  # fmt: skip
        problems.append("fulfillment: no trigger on the job queue")
    for name in ("pao-relay", "pao-projector"):
        if name in scaled or name in of_kind(documents, "HorizontalPodAutoscaler"):
            problems.append(f"{name} must not be autoscaled")
    return problems


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_document_validates_against_its_schema(
    rendered: dict[str, list[Document]], folder: str
) -> None:
    for document in rendered[folder]:
        if document["kind"] == "ScaledObject":
            jsonschema.validate(document, keda.SCALED_OBJECT)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_process_runs_after_migrations_with_probes_and_hardening(
    rendered: dict[str, list[Document]], folder: str
) -> None:
    documents = rendered[folder]
    deployments = of_kind(documents, "Deployment")
    assert set(deployments) == {f"pao-{name}" for name in SERVICES}
    for name in SERVICES:
        spec = pod_spec(deployments[f"pao-{name}"])
        (main,) = spec["containers"]
        (migrate,) = spec["initContainers"]
        assert main["command"] == ["pao", "serve", name]
        assert migrate["command"] == ["pao", "migrate"]
        assert migrate["image"] == main["image"]  # a version's schema before that version runs
        assert main["image"].rsplit(":", 1)[0].endswith(f"pao-{name}")
    (job,) = of_kind(documents, "Job").values()
    assert pod_spec(job)["containers"][0]["command"] == ["pao", "migrate"]
    assert probe_problems(documents) == []
    assert hardening_problems(documents) == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_settings_come_from_the_config_map_and_secrets_from_secret_references(
    rendered: dict[str, list[Document]], folder: str
) -> None:
    documents = rendered[folder]
    assert secret_problems(documents) == []
    fields = {f"PAO_{name.upper()}" for name in Settings.model_fields}
    named = set(config(documents))
    for workload in of_kind(documents, "Deployment").values():
        for container in containers(workload):
            assert {"configMapRef": {"name": "pao-config"}} in container["envFrom"]
            named |= {e["name"] for e in container["env"] if e["name"].startswith("PAO_")}
            database = next(e for e in container["env"] if e["name"] == "PAO_DATABASE_URL")
            assert database["valueFrom"]["secretKeyRef"]["name"] == "pao-database"
    assert named <= fields, f"not PAO settings: {sorted(named - fields)}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_disruption_budgets_services_and_network_policies_cover_every_process(
    rendered: dict[str, list[Document]], folder: str
) -> None:
    documents = rendered[folder]
    budgets, services = of_kind(documents, "PodDisruptionBudget"), of_kind(documents, "Service")
    for name, deployment in of_kind(documents, "Deployment").items():
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= pods.items()
        assert services[name]["spec"]["selector"].items() <= pods.items()
    policies = of_kind(documents, "NetworkPolicy").values()
    open_to_all = [p for p in policies if any("from" not in rule for rule in p["spec"]["ingress"])]
    assert [p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in open_to_all] == ["gateway"]  # fmt: skip


@pytest.mark.parametrize("folder", FOLDERS)
def test_consumers_scale_on_their_lag_up_to_their_partitions_and_the_gateway_on_cpu(
    rendered: dict[str, list[Document]], folder: str
) -> None:
    documents = rendered[folder]
    assert scaling_problems(documents) == []
    (hpa,) = of_kind(documents, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pao-gateway"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_prod_has_more_partitions_and_verifies_the_database_certificate(
    rendered: dict[str, list[Document]],
) -> None:
    prod = rendered["overlays/prod"]
    assert int(config(prod)["PAO_KAFKA_PARTITIONS"]) > int(
        config(rendered["base"])["PAO_KAFKA_PARTITIONS"]
    )
    for workload in [*of_kind(prod, "Deployment").values(), *of_kind(prod, "Job").values()]:
        for container in containers(workload):
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/etc/pao/database-ca" in mounts, container["name"]


def mutated(documents: list[Document], change: Callable[[list[Document]], None]) -> list[Document]:
    copied = copy.deepcopy(documents)
    change(copied)
    return copied


def test_the_checks_catch_a_missing_probe_a_literal_secret_and_too_many_replicas(
    rendered: dict[str, list[Document]],
) -> None:
    base = rendered["base"]

    def drop_probe(docs: list[Document]) -> None:
        pod_spec(of_kind(docs, "Deployment")["pao-relay"])["containers"][0].pop("readinessProbe")

    def literal_secret(docs: list[Document]) -> None:
        config(docs)["PAO_JIRA_TOKEN"] = "s3cr3t"

    def beyond_partitions(docs: list[Document]) -> None:
        of_kind(docs, "ScaledObject")["pao-request"]["spec"]["maxReplicaCount"] = 99

    def writable_root(docs: list[Document]) -> None:
        container = pod_spec(of_kind(docs, "Deployment")["pao-gateway"])["containers"][0]
        container["securityContext"]["readOnlyRootFilesystem"] = False

    assert probe_problems(mutated(base, drop_probe)) == [
        "relay: readinessProbe must GET /health/ready on port 9464"
    ]
    assert secret_problems(mutated(base, literal_secret)) == [
        "ConfigMap pao-config: PAO_JIRA_TOKEN holds a secret"
    ]
    assert scaling_problems(mutated(base, beyond_partitions)) == [
        "request: maxReplicaCount 99 is above the 3 partitions of its topics"
    ]
    assert hardening_problems(mutated(base, writable_root)) == [
        "pao-gateway/gateway: securityContext.readOnlyRootFilesystem must be True"
    ]


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl with kustomize v4 or later on PATH")
@pytest.mark.parametrize("folder", FOLDERS)
def test_the_test_renderer_agrees_with_kubectl(
    rendered: dict[str, list[Document]], folder: str
) -> None:
    def by_name(documents: list[Document]) -> dict[tuple[str, str], Document]:
        return {(d["kind"], d["metadata"]["name"]): d for d in documents}

    assert by_name(render(K8S / folder)) == by_name(rendered[folder])


# checkov: policies on the rendered manifests and on the Dockerfile.


def _checkov_available() -> Path:
    if CHECKOV.exists():
        return CHECKOV
    message = f"{CHECKOV} is missing: `make checkov` installs it"
    if os.environ.get("CI") or os.environ.get("MAKELEVEL"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError  # unreachable


def _checkov(*args: str) -> list[Document]:
    done = subprocess.run(
        [str(CHECKOV), *args, "--skip-download", "--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"},
    )
    if done.returncode not in (0, 1):
        raise AssertionError(f"checkov failed to run: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    return report if isinstance(report, list) else [report]


@pytest.fixture(scope="module")
def checkov_reports(
    rendered: dict[str, list[Document]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Document]:
    """One checkov run (it takes seconds to start) over every rendering and the Dockerfile."""
    _checkov_available()
    folder = tmp_path_factory.mktemp("rendered")
    for name, documents in rendered.items():
        flat = name.replace("/", "-")
        (folder / f"{flat}.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    shutil.copy(REPO / "deploy" / "Dockerfile", folder / "Dockerfile")
    reports = _checkov("-d", str(folder), "--framework", "kubernetes", "dockerfile")
    return {r["check_type"]: r for r in reports}


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason(
    checkov_reports: dict[str, Document], framework: str
) -> None:
    report = checkov_reports[framework]
    results = report["results"]
    assert report["summary"]["passed"] > 0
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in results["failed_checks"]
    ]
    assert failed == []
    for skipped in results.get("skipped_checks", []):
        assert len(skipped.get("suppress_comment", "")) > 20, skipped["check_id"]
