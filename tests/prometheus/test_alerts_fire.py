"""The real Prometheus (Debian's package) scrapes a running worker pool (``dramatiq actors``) and the
scheduler with ``deploy/prometheus/alerts.yml`` loaded, every second: 51 dead letters on the real
broker make the DLQ alert fire, and every query of the Grafana dashboard parses and returns a series.

``make test-prometheus`` (marker ``prometheus``; not in ``make test``); ``.ci/run`` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import User
from tests.processes import free_port, listening, required_command, terminate
from tests.worker import WorkerProcess

pytestmark = pytest.mark.prometheus

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "edujobs.json"


def wait_for(check: Any, what: str, timeout: float = 120.0, *, logs: tuple[Path, ...] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    raise AssertionError(f"{what}: not within {timeout}s\n{tails}")


class Background:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            args,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        terminate(self.process, 30)
        self._out.close()


@pytest.fixture
def users(edujobs_env: dict[str, str]) -> None:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(User(id=1, email="ada@example.edu", name="Ada Lovelace", role="student"))
        session.add(User(id=2, email=None, name="No Mail", role="student"))
        session.commit()
    engine.dispose()


@pytest.fixture
def stack(edujobs_env: dict[str, str], users: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A notifications pool and a scheduler with their metrics ports, and Prometheus scraping both."""
    worker_port, scheduler_port, prometheus_port = free_port(), free_port(), free_port()
    env = {
        **edujobs_env,
        "EDUJOBS_METRICS_PORT": str(worker_port),
        "EDUJOBS_METRICS_DIR": str(tmp_path / "metrics"),
        "EDUJOBS_SCHEDULER_METRICS_PORT": str(scheduler_port),
        "EDUJOBS_SCHEDULER_CRONTAB": "tests.e2e.crontab_testing:NONE",
    }
    (tmp_path / "metrics").mkdir()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "edujobs-worker",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{worker_port}"], "labels": {"pool": "notifications"}}
                ],
            },
            {
                "job_name": "edujobs-scheduler",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{scheduler_port}"], "labels": {"pool": "scheduler"}}
                ],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    worker = WorkerProcess(env, processes=1, threads=4, queues=("notifications",)).wait_ready()
    scheduler = Background([sys.executable, "-m", "ops.cli", "scheduler"], env, tmp_path / "scheduler.log")
    prometheus = Background(
        [
            required_command("prometheus", "prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        {},
        tmp_path / "prometheus.log",
    )
    logs = (worker.log, scheduler.log, prometheus.log)
    try:
        wait_for(lambda: listening(scheduler_port), "scheduler metrics", logs=logs)
        api = f"http://127.0.0.1:{prometheus_port}/api/v1"
        wait_for(lambda: listening(prometheus_port), "prometheus listening", logs=logs)
        yield {"env": env, "api": api, "logs": logs}
    finally:
        prometheus.stop()
        scheduler.stop()
        worker.stop()


def query(api: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api}/query", params={"query": expr}, timeout=10)
    body = response.json()
    # a query that does not parse is a 400 with status "error": fail at once, never retry it
    assert body["status"] == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def firing(api: str, name: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{api}/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_51_dead_letters_fire_the_alert_and_every_dashboard_query_returns_a_series(
    stack: dict[str, Any],
) -> None:
    env, api, logs = stack["env"], stack["api"], stack["logs"]
    # Given Prometheus scrapes both targets
    wait_for(lambda: len(query(api, "up == 1")) == 2, "both targets up", logs=logs)
    # and a one-off schedule due in 20 s (the CLI may start slowly), a fire for the schedule panel
    at = (datetime.now(UTC) + timedelta(seconds=20)).strftime("%Y-%m-%d %H:%M:%S")
    added = subprocess.run(
        [sys.executable, "-m", "ops.cli", "schedules", "add", "prometheus-once", "notifications.send_email",
         json.dumps({"user_id": 1, "template": "welcome"}), "--at", at],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    # When 3 emails succeed and 51 go to a user without an email address (dead-lettered: permanent)
    client = Client(env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    try:
        for _ in range(3):
            client.send("notifications.send_email", {"user_id": 1, "template": "welcome"})
        for n in range(51):
            client.send(
                "notifications.send_email", {"user_id": 2, "template": "welcome"}, idempotency_key=f"d{n}"
            )
    finally:
        client.close()
    # Then the DLQ alert fires for notifications, through Prometheus' HTTP API
    alerts = wait_for(lambda: firing(api, "EdujobsDeadLetterQueueLarge"), "DLQ alert firing", 180, logs=logs)
    assert [a["labels"]["queue"] for a in alerts] == ["notifications"]
    assert float(alerts[0]["value"]) >= 51
    # And the pool tells that notifications is running, not paused (EdujobsQueueWithoutConsumers uses it)
    [paused] = query(api, 'max by (queue) (edujobs_queue_paused{queue="notifications"})')
    assert paused["value"][1] == "0"
    # And every panel's query of the Grafana dashboard parses and returns a series
    panels = json.loads(DASHBOARD.read_text())["panels"]
    for panel in panels:
        for target in panel["targets"]:
            wait_for(
                lambda expr=target["expr"]: query(api, expr),
                f"panel {panel['title']!r}: {target['expr']}",
                90,
                logs=logs,
            )
