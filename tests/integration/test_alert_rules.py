"""The Prometheus alert rules (``deploy/prometheus/alerts.yml``) are valid, behave as their promtool
unit tests say, and only name metrics edujobs exports.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it): missing, the test is
skipped locally and fails in CI, like the services of ``tests.services``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from brokers.queue_stats import QueueStatsCollector, QueueStatsReader

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have it: see .ci/run)")
        pytest.skip(message)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    # When promtool checks the rules and runs their unit tests
    checked = run("check", "rules", "alerts.yml")
    tested = run("test", "rules", "alerts_test.yml")
    # Then both succeed
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr


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
    exported = {metric.name for metric in registry.collect()}
    # Then every metric the alerts use is among them
    assert named and named <= exported, named - exported
