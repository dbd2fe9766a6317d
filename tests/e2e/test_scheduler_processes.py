"""`edujobs scheduler` processes on the real RabbitMQ and PostgreSQL: two replicas enqueue a fire once,
a killed leader is replaced, a bad crontab stops start-up with a clear message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ops.cli import app
from schedules.crontab import CRONTAB
from store.db import make_engine
from store.models_schedules import ScheduleFire, SchedulerLease
from tests.amqp import depth, take
from tests.integration.test_dlq import topology  # noqa: F401  (fixture)
from tests.worker import ROOT, wait_until


class SchedulerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "scheduler"],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


@pytest.fixture
def scheduler_env(edujobs_env: dict[str, str], topology: str) -> dict[str, str]:  # noqa: F811
    return {
        **edujobs_env,
        "EDUJOBS_SCHEDULER_CRONTAB": "tests.e2e.crontab_testing:NONE",
        "EDUJOBS_SCHEDULER_LEASE_SECONDS": "3",
        "EDUJOBS_SCHEDULER_TICK_SECONDS": "0.2",
        "EDUJOBS_SCHEDULER_METRICS_PORT": "0",
    }


@pytest.fixture
def schedulers(scheduler_env: dict[str, str], tmp_path: Path) -> Iterator[list[SchedulerProcess]]:
    started = [SchedulerProcess(scheduler_env, tmp_path / f"scheduler-{n}.log") for n in range(2)]
    yield started
    for process in started:
        process.stop()


def add_one_off(name: str, seconds: float) -> datetime:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    result = CliRunner().invoke(
        app,
        [
            "schedules", "add", name, "notifications.send_weekly_digests", "{}",
            "--at", when.strftime("%Y-%m-%d %H:%M:%S"), "--timezone", "UTC", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return when


def leader(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            lease = session.get(SchedulerLease, "scheduler")
            return lease.holder if lease is not None and lease.expires_at > datetime.now(UTC) else None
    finally:
        engine.dispose()


@pytest.mark.faults
def test_two_schedulers_enqueue_a_fire_once_and_a_killed_leader_is_replaced(
    scheduler_env: dict[str, str], schedulers: list[SchedulerProcess]
) -> None:
    amqp, database = scheduler_env["EDUJOBS_RABBITMQ_URL"], scheduler_env["EDUJOBS_DATABASE_URL"]
    wait_until(lambda: leader(database) is not None, timeout=30, what="a leader")
    # Given two scheduler processes and a one-off schedule due in 3 seconds
    add_one_off("race-1", 3)
    # Then exactly one message reaches RabbitMQ
    wait_until(lambda: depth(amqp, "notifications") >= 1, timeout=30, what="the fire")
    time.sleep(2)
    [message] = take(amqp, "notifications", 1)
    assert message.message()["actor_name"] == "notifications.send_weekly_digests"
    assert message.message()["options"]["schedule"] == "race-1"
    assert depth(amqp, "notifications") == 0
    # When the leader is killed (no chance to hand its lease over)
    first = leader(database)
    engine = make_engine(database)
    with Session(engine) as session:
        [fire] = session.scalars(select(ScheduleFire)).all()
    assert fire.status == "enqueued" and fire.claimed_by == first
    assert first is not None
    [victim] = [p for p in schedulers if first.endswith(f":{p.process.pid}")]
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    # Then the other takes over within the lease (3 s) and fires the next schedule, once
    wait_until(lambda: leader(database) not in (None, first), timeout=30, what="a new leader")
    add_one_off("after-failover", 2)
    wait_until(lambda: depth(amqp, "notifications") >= 1, timeout=30, what="the fire after failover")
    time.sleep(1)
    assert depth(amqp, "notifications") == 1
    with Session(engine) as session:
        fires = {f.schedule: f.claimed_by for f in session.scalars(select(ScheduleFire))}
    assert fires["after-failover"] not in (first, None)
    engine.dispose()


def test_a_crontab_naming_an_unknown_actor_stops_start_up(
    scheduler_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**scheduler_env, "EDUJOBS_SCHEDULER_CRONTAB": "tests.e2e.crontab_testing:UNKNOWN_ACTOR"}
    process = SchedulerProcess(env, tmp_path / "bad.log")
    assert process.process.wait(60) == 2
    process.stop()
    output = process.output()
    assert "the scheduler cannot start" in output
    assert "schedule 'nightly-typo' names the unknown actor 'maintenance.run_cleanupp'" in output


def test_schedules_lists_the_crontab_with_next_runs(edujobs_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["schedules", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {entry.name for entry in CRONTAB}
    assert rows["monthly-compliance-audit"]["next"][0][8:10] == "01"
    assert all(len(row["next"]) == 3 for row in rows.values())
