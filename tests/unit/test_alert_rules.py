"""The alert rules pass promtool; rules and dashboard watch only the metrics PAO exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "pao-alerts.yml"
RULE_TESTS = PROMETHEUS / "pao-alerts.test.yml"
EXAMPLE_CONFIG = PROMETHEUS / "prometheus.example.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "pao-dashboard.json"
OPERATIONS_DOC = REPO / "docs" / "operations.md"

# What PAO's services export (histograms by their base name).
EXPORTED_METRICS = frozenset(
    {
        "pao_http_requests_total",
        "pao_http_request_duration_seconds",
        "pao_requests_submitted_total",
        "pao_requests_finished_total",
        "pao_request_duration_seconds",
        "pao_action_runs_total",
        "pao_action_duration_seconds",
        "pao_action_attempts_total",
        "pao_fallbacks_total",
        "pao_relay_published_events_total",
        "pao_relay_lag_events",
        "pao_relay_lag_seconds",
        "pao_consumer_lag_events",
        "pao_consumer_handled_total",
        "pao_consumer_dead_lettered_total",
        "pao_jobs_due",
        "pao_jobs_oldest_due_age_seconds",
        "pao_breaker_state",
        "pao_jira_poll_duration_seconds",
        "pao_jira_watched_issues",
        "pao_notification_outbox_depth",
        "pao_notification_send_failures_total",
        "pao_eventstore_append_duration_seconds",
        "pao_eventstore_append_conflicts_total",
        "pao_build_info",
    }
)
METRIC_NAME = re.compile(r"\bpao_[a-z_]+")
RECORDED_NAME = re.compile(r"\bpao:[a-z0-9_:]+")
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed: .ci/run installs it (Debian package `prometheus`); "
            "locally run `apt-get install prometheus` or put Prometheus' promtool on PATH"
        )
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, check=False)


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alerts() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def metric_names(expression: str) -> set[str]:
    return {HISTOGRAM_SERIES.sub("", name) for name in METRIC_NAME.findall(expression)}


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_the_rule_file_passes_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_prometheus_config_loads_the_rules_and_passes_promtool_check() -> None:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"pao-gateway", "pao-relay"}
    result = promtool("check", "config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_and_stay_silent_as_their_unit_tests_expect() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_relay_lag_breakers_dead_letters_and_the_fast_burn() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert {
        "PAORelayLagSeconds",
        "PAORelayLagEvents",
        "PAOBreakerOpen",
        "PAODeadLetters",
        "PAOSubmitLatencyBudgetFastBurn",
    } <= tested
    assert tested <= {rule["alert"] for rule in alerts()}


def test_every_alert_says_how_bad_what_happened_and_where_its_runbook_is() -> None:
    anchors = heading_anchors(OPERATIONS_DOC.read_text())
    for alert in alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"], alert["alert"]
        assert annotations["description"], alert["alert"]
        doc, _, anchor = annotations["runbook_url"].partition("#")
        assert doc == "docs/operations.md", alert["alert"]
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in {doc}"


def test_rules_and_dashboard_use_only_metrics_pao_exports() -> None:
    rule_expressions = [rule["expr"] for group in rule_groups() for rule in group["rules"]]
    variables = [
        variable["definition"]
        for variable in dashboard()["templating"]["list"]
        if variable["type"] == "query"
    ]
    for expression in rule_expressions + dashboard_queries() + variables:
        unknown = metric_names(expression) - EXPORTED_METRICS
        assert not unknown, f"{sorted(unknown)} in {expression}"


def test_the_dashboard_reads_only_rules_that_are_recorded() -> None:
    recorded = {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }
    for expression in dashboard_queries():
        assert set(RECORDED_NAME.findall(expression)) <= recorded, expression


def test_the_dashboard_is_valid_with_a_prometheus_datasource_and_unique_panel_ids() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, with Grafana's variables filled in."""
    rules = [
        {
            "record": f"dashboard:query_{number}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$item", ".*"),
        }
        for number, expr in enumerate(dashboard_queries())
    ]
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
