"""The Prometheus alert rules (``deploy/prometheus/alerts.yml``) are valid, behave as their promtool
unit tests say, and only name metrics edujobs exports.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it): missing, the test is
skipped locally and fails in CI, like the services of ``tests.services``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from brokers.queue_stats import QueuePausesCollector, QueueStatsCollector, QueueStatsReader
from tests.processes import required_command

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    return required_command("promtool", "prometheus")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    # When promtool checks the rules and runs their unit tests
    checked = run("check", "rules", "alerts.yml")
    tested = run("test", "rules", "alerts_test.yml")
    # Then both succeed
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr


def exported_metric_names() -> set[str]:
    """Every metric name edujobs exports: the worker pools' (middleware.metrics), the scheduler's
    (schedules.service) and the queue gauges (brokers.queue_stats, below)."""
    from middleware.metrics import MetricSet
    from schedules import service

    registry = CollectorRegistry()
    MetricSet(registry)
    names = {sample.name for metric in registry.collect() for sample in metric.samples}
    names |= {metric.name for metric in registry.collect()}
    for collector in (service.FIRES, service.LAST_ENQUEUED):
        for metric in collector.collect():
            names |= {metric.name} | {metric.name + "_total"}
    return names


def test_every_metric_an_alert_names_is_exported() -> None:
    # Given the metric names in the rules (alert names are CamelCase, commands have no underscore)
    named = set(re.findall(r"\bedujobs_[a-z_]+", (RULES / "alerts.yml").read_text()))
    # When the queue gauges are collected from a management API answer that has every figure
    listing = [
        {"name": "media", "messages": 1, "messages_ready": 1, "head_message_timestamp": 1},
        {"name": "media.XQ", "messages": 1, "messages_ready": 1, "head_message_timestamp": 1},
    ]
    listing[1]["arguments"] = {"x-message-ttl": 1000}
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, json=listing))
    reader = QueueStatsReader(
        management_url="http://rabbit:15672", vhost="/", queues=("media",), transport=transport
    )
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(reader))
    registry.register(QueuePausesCollector(lambda: ["media"]))
    exported = {metric.name for metric in registry.collect()} | exported_metric_names()
    # Then every metric the alerts use is among them
    assert named and named <= exported, named - exported


def test_every_alert_has_a_summary_a_command_a_runbook_section_and_unit_tests() -> None:
    import yaml

    rules = [r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    tests = (RULES / "alerts_test.yml").read_text()
    runbook = (RULES.parents[1] / "docs" / "deploy.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("#")
    }
    for rule in rules:
        name, annotations = rule["alert"], rule["annotations"]
        assert annotations["summary"] and "edujobs " in annotations["description"], name
        url = annotations["runbook_url"]
        assert url.startswith("docs/deploy.md#") and url.split("#")[1] in anchors, (name, url)
        # a test where it fires (exp_labels) and one where it does not (exp_alerts: [])
        blocks = tests.split(f"alertname: {name}\n")[1:]
        assert any(b.lstrip().startswith("exp_alerts:\n") for b in blocks), f"{name} never tested firing"
        assert any(b.lstrip().startswith("exp_alerts: []") for b in blocks), f"{name} never tested silent"
