"""Priorities act on the backlog; long delays wait durably in RabbitMQ, not in worker memory."""

from __future__ import annotations

import time

import pytest

from contracts.priorities import PRIORITIES
from tests.amqp import depth, dramatiq_message, publish
from tests.e2e.conftest import recorded
from tests.worker import WorkerProcess

KEY = b"test-signing-key"


def wait_for(key: str, count: int, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = recorded(key)
        if len(values) >= count:
            return values
        time.sleep(0.1)
    raise AssertionError(f"expected {count} records, got {recorded(key)}")


def record(url: str, value: str, *, priority: str, sleep: float = 0.0, eta: int | None = None) -> None:
    options: dict[str, object] = {"broker_priority": PRIORITIES[priority]}
    queue = "maintenance"
    if eta is not None:
        options["eta"] = eta
        queue = "maintenance.DQ"
    message = dramatiq_message(
        "testing.record", queue, {"value": value, "sleep": sleep}, key=KEY, options=options
    )
    publish(url, queue, message, priority=PRIORITIES[priority])


def test_a_critical_message_overtakes_a_backlog_of_low_ones(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given one worker thread with a prefetch of 1, busy with a backlog of 30 low-priority messages
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key, "EDUJOBS_QUEUE_PREFETCH": "1"}
    worker = WorkerProcess(env, threads=1, module="tests.e2e.actors_testing").wait_ready()
    try:
        for n in range(30):
            record(amqp_url, f"low-{n}", priority="low", sleep=0.05)
        wait_for(redis_key, 2)
        # When a critical message is sent after them
        record(amqp_url, "critical", priority="critical")
        # Then it is processed before the backlog drains: behind at most the prefetched messages
        values = wait_for(redis_key, 31)
        position = values.index("critical")
        assert position < 10, values
    finally:
        worker.stop()


@pytest.mark.faults
def test_a_long_delay_is_parked_in_rabbitmq_and_survives_a_killed_worker(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given workers that park anything due in more than 2 s, in hops of 1 s
    env = {
        **edujobs_env,
        "EDUJOBS_TEST_KEY": redis_key,
        "EDUJOBS_PARK_THRESHOLD_SECONDS": "2",
        "EDUJOBS_PARK_HOP_SECONDS": "1",
    }
    worker = WorkerProcess(env, threads=1, module="tests.e2e.actors_testing").wait_ready()
    due = int(time.time() * 1000) + 8_000
    # When a message is delayed by 8 s
    record(amqp_url, "delayed", priority="normal", eta=due)
    # Then it waits in RabbitMQ (.park / .DQ), not unacked in the worker
    time.sleep(1.5)
    assert recorded(redis_key) == []
    # And when the worker is killed outright while the message waits
    worker.kill()
    assert depth(amqp_url, "maintenance.park") + depth(amqp_url, "maintenance.DQ") == 1
    # Then a new worker runs it once, on time (not before it is due)
    worker = WorkerProcess(env, threads=1, module="tests.e2e.actors_testing").wait_ready()
    try:
        assert wait_for(redis_key, 1, timeout=30) == ["delayed"]
        assert time.time() * 1000 >= due
        time.sleep(1.0)
        assert recorded(redis_key) == ["delayed"]
    finally:
        worker.stop()


def test_a_message_its_sender_delayed_runs_once_when_due(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given a message delayed by its sender as brokers.client delays one: eta, and not_before signed
    # with the envelope (a worker once kept re-delaying such a message: it never ran)
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key}
    worker = WorkerProcess(env, threads=1, module="tests.e2e.actors_testing").wait_ready()
    try:
        due = int(time.time() * 1000) + 2_000
        message = dramatiq_message(
            "testing.record",
            "maintenance.DQ",
            {"value": "due"},
            key=KEY,
            options={"eta": due, "not_before": due},
        )
        publish(amqp_url, "maintenance.DQ", message)
        # Then it runs once, not before it is due, and nothing of it is left anywhere
        assert wait_for(redis_key, 1, timeout=30) == ["due"]
        assert time.time() * 1000 >= due
        for queue in ("maintenance", "maintenance.DQ", "maintenance.park", "maintenance.XQ"):
            assert depth(amqp_url, queue) == 0, queue
    finally:
        worker.stop()
    assert recorded(redis_key) == ["due"]
