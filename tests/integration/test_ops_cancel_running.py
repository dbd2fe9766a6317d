"""A running long job of any domain stops at its next progress point once an operator cancels it,
and is recorded as cancelled: acknowledged, neither retried nor dead-lettered. On PostgreSQL, with
the worker's real middleware stack on a StubBroker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.base import actor, report_progress
from brokers.settings import Settings
from brokers.stack import build_middleware
from store.db import get_engine
from store.jobs import JobStore, cancel
from store.migrate import upgrade
from tests.worker import wait_until

STEPS = 500


@pytest.fixture
def broker(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubBroker]:
    upgrade(migrated_database_url)
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", migrated_database_url)  # what report_progress writes to
    settings = Settings(database_url=migrated_database_url, metrics_port=0, operator_poll_seconds=0.1)
    broker = StubBroker(middleware=build_middleware(settings))
    broker.emit_after("process_boot")
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)  # actors.base.actor declares on the current broker
    yield broker
    dramatiq.set_broker(previous)
    broker.close()


def test_a_running_long_job_stops_at_its_next_progress_point_when_cancelled(broker: StubBroker) -> None:
    # Given a long maintenance job that reports its progress at every step
    steps: list[int] = []

    @actor("maintenance.archive_old_data", time_limit=60_000, max_backoff=1000)
    def archive_old_data(days: int = 365, batch_size: int = 1000) -> dict[str, Any]:
        for step in range(STEPS):
            steps.append(step)
            report_progress(100 * step / STEPS)
            time.sleep(0.02)
        return {"archived": STEPS}

    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()
    try:
        message = archive_old_data.send(days=400)
        jobs = JobStore(get_engine())
        wait_until(lambda: (job := jobs.get(message.message_id)) is not None and job.state == "running")
        # When an operator cancels it while it runs
        assert cancel(get_engine(), message.message_id, by="grace", reason="wrong cut-off") == "cancelled"
        cancelled_at = len(steps)
        broker.join(archive_old_data.queue_name)
        worker.join()
    finally:
        worker.stop()
    # Then it stopped within a progress interval (half a second: about 25 steps), not at the end
    assert len(steps) < cancelled_at + 50 < STEPS
    # And the message was acknowledged: not dead-lettered, not retried
    assert broker.dead_letters == []
    assert broker.queues[archive_old_data.queue_name].qsize() == 0
    # And the job is recorded as cancelled, with the operator's reason
    job = JobStore(get_engine()).get(message.message_id)
    assert job is not None and (job.state, job.error) == ("cancelled", "wrong cut-off")
