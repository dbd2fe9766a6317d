"""A dead letter requeued by an operator reaches the worker again, with its id and lineage."""

from __future__ import annotations

import json
import time

import redis
from typer.testing import CliRunner

from ops.cli import app
from ops.dlq import DeadLetters
from tests.amqp import depth, dramatiq_message, publish
from tests.worker import WorkerProcess

KEY = b"test-signing-key"


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_a_requeued_dead_letter_runs_again_on_the_worker(edujobs_env: dict[str, str], redis_key: str) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    worker = WorkerProcess({**edujobs_env, "EDUJOBS_TEST_KEY": redis_key}, module="tests.e2e.actors_testing")
    worker.wait_ready()
    try:
        # Given a message the worker dead-lettered after a permanent error
        message = dramatiq_message("testing.fail_permanently", "maintenance", {"user_id": 9}, key=KEY)
        publish(url, "maintenance", message)
        wait_for(lambda: depth(url, "maintenance.XQ") == 1)
        [letter] = DeadLetters(url).list("maintenance")
        assert letter.id == message["message_id"] and letter.reason == "permanent_error"
        # When an operator requeues it
        result = CliRunner().invoke(app, ["dlq", "requeue", "maintenance", "--all", "--yes", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["ids"] == [message["message_id"]]
        # Then the worker runs it again (the signature still holds) and dead-letters it anew,
        # with the same id and a fresh count of attempts
        wait_for(lambda: redis.Redis().llen(redis_key) == 2)
        wait_for(lambda: depth(url, "maintenance.XQ") == 1)
        [again] = DeadLetters(url).list("maintenance")
        assert again.id == message["message_id"]
        assert again.record["attempts"] == 1
        assert again.message is not None
        assert again.message["options"]["requeued_from"]["reason"] == "permanent_error"
    finally:
        worker.stop()
