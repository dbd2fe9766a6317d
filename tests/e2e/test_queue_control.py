"""Operators pause and resume a queue and cancel a queued job, against a real worker and RabbitMQ."""

from __future__ import annotations

import json
import time

import redis
from typer.testing import CliRunner

from brokers.settings import Settings
from brokers.stack import build_broker
from ops.cli import app
from store.audit import recent
from store.db import make_engine
from store.jobs import JobStore
from tests.amqp import consumers, depth, dramatiq_message, publish
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"


def cli(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.output)
    return parsed


def test_a_paused_queue_keeps_its_messages_and_a_resumed_one_runs_them_except_the_cancelled(
    edujobs_env: dict[str, str], redis_key: str
) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key, "EDUJOBS_OPERATOR_POLL_SECONDS": "0.5"}
    worker = WorkerProcess(env, module="tests.e2e.actors_testing").wait_ready()
    try:
        # Given an operator paused the maintenance queue while a worker consumes it
        assert cli("queues", "pause", "maintenance", "--reason", "database upgrade", "--as", "ana")["changed"]
        # the worker's poll (0.5 s here) closes its consumer
        wait_until(lambda: consumers(url, "maintenance") == 0, what="the paused queue's consumer closed")
        # When three jobs are sent to it
        messages = [
            dramatiq_message("testing.record", "maintenance", {"value": f"job-{n}"}, key=KEY)
            for n in range(3)
        ]
        for message in messages:
            publish(url, "maintenance", message)
        time.sleep(3)
        # Then none runs, and all three wait in RabbitMQ, ready (none is held by the paused worker)
        assert redis.Redis().llen(redis_key) == 0
        assert depth(url, "maintenance") == 3
        listing = CliRunner().invoke(app, ["queues", "--json"])
        assert listing.exit_code == 0, listing.output
        rows = {row["queue"]: row for row in json.loads(listing.stdout)}
        assert rows["maintenance"]["paused"] is True and rows["maintenance"]["paused_by"] == "ana"
        assert rows["notifications"]["paused"] is False
        # And when one of them is cancelled (published straight to RabbitMQ, no job was recorded for
        # it: --unrecorded) and the queue resumed
        cancelled = str(messages[1]["message_id"])
        assert cli("jobs", "cancel", cancelled, "--unrecorded", "--as", "ana")["state"] == "cancelled"
        assert cli("queues", "resume", "maintenance", "--as", "ana")["changed"]
        # Then the two others run, the cancelled one is skipped and acknowledged
        wait_until(lambda: redis.Redis().llen(redis_key) == 2, timeout=30)
        wait_until(lambda: depth(url, "maintenance") == 0, timeout=30)
        time.sleep(1)
        assert sorted(v.decode() for v in redis.Redis().lrange(redis_key, 0, -1)) == ["job-0", "job-2"]
        engine = make_engine(env["EDUJOBS_DATABASE_URL"])
        job = JobStore(engine).get(cancelled)
        assert job is not None and job.state == "cancelled"
        assert depth(url, "maintenance.XQ") == 0
        # And the pause, the cancellation and the resume are in the audit log
        actions = [(entry.action, entry.target) for entry in recent(engine, limit=10)]
        assert ("queue.pause", "maintenance") in actions
        assert ("job.cancel", cancelled) in actions
        assert ("queue.resume", "maintenance") in actions
    finally:
        worker.stop()


def test_a_bad_queue_name_says_which_exist(edujobs_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["queues", "pause", "mediaa"])
    assert result.exit_code == 2
    assert "unknown queue 'mediaa'" in result.output and "media" in result.output


def test_a_finished_job_cannot_be_cancelled(edujobs_env: dict[str, str]) -> None:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    JobStore(engine).mark_running("m-1", 1, actor_name="testing.record", queue="maintenance")
    JobStore(engine).mark_succeeded("m-1")
    result = CliRunner().invoke(app, ["jobs", "cancel", "m-1"])
    assert result.exit_code == 1
    assert "succeeded already" in result.output


def test_a_worker_started_during_a_pause_takes_nothing_and_skips_a_job_cancelled_before_it_started(
    edujobs_env: dict[str, str], redis_key: str
) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key, "EDUJOBS_OPERATOR_POLL_SECONDS": "0.5"}
    # Given a paused maintenance queue with two jobs waiting, and one of them cancelled, all
    # before any worker runs (a deploy during a pause)
    broker = build_broker(Settings(rabbitmq_url=url))
    try:
        broker.declare_topology(("maintenance",))
    finally:
        broker.close()
    assert cli("queues", "pause", "maintenance", "--reason", "migration", "--as", "ana")["changed"]
    messages = [
        dramatiq_message("testing.record", "maintenance", {"value": f"job-{n}"}, key=KEY) for n in range(2)
    ]
    for message in messages:
        publish(url, "maintenance", message)
    cancelled = str(messages[0]["message_id"])
    assert cli("jobs", "cancel", cancelled, "--unrecorded", "--as", "ana")["state"] == "cancelled"
    # When a worker starts
    worker = WorkerProcess(env, module="tests.e2e.actors_testing").wait_ready()
    try:
        time.sleep(2)
        # Then it has taken nothing from the paused queue: both jobs wait there, ready
        assert redis.Redis().llen(redis_key) == 0
        assert depth(url, "maintenance") == 2
        # And once the queue is resumed, the cancelled job is skipped and the other runs
        assert cli("queues", "resume", "maintenance", "--as", "ana")["changed"]
        wait_until(lambda: depth(url, "maintenance") == 0, timeout=30)
        wait_until(lambda: redis.Redis().llen(redis_key) == 1, timeout=30)
        assert [v.decode() for v in redis.Redis().lrange(redis_key, 0, -1)] == ["job-1"]
    finally:
        worker.stop()
