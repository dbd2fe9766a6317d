"""A dead letter RabbitMQ refuses: the original is kept (unacked) until the dead letter is accepted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.amqp import depth, dramatiq_message, publish, take
from tests.e2e.conftest import recorded
from tests.rabbitmq_policies import refusing
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"

pytestmark = pytest.mark.faults


@pytest.fixture
def worker(edujobs_env: dict[str, str], redis_key: str) -> Iterator[WorkerProcess]:
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key}
    process = WorkerProcess(env, threads=2, module="tests.e2e.actors_testing").wait_ready()
    yield process
    process.stop()


def send(url: str, actor: str, kwargs: dict[str, object]) -> dict[str, object]:
    message = dramatiq_message(actor, "maintenance", kwargs, key=KEY)
    publish(url, "maintenance", message)
    return message


def take_until(key: str, expected: list[str]) -> None:
    wait_until(lambda: recorded(key) == expected, what=f"{expected} recorded")


def test_a_dead_letter_refused_by_rabbitmq_keeps_the_original_until_it_is_accepted(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # Given maintenance.XQ refuses every publish for a while (a max-length 0, reject-publish policy)
    with refusing(amqp_url, "maintenance.XQ"):
        # When a message fails permanently meanwhile
        sent = send(amqp_url, "testing.fail_permanently", {"user_id": 4})
        take_until(redis_key, ["attempt"])
        # And the worker has given up publishing the dead letter for now (Dramatiq retries later)
        wait_until(lambda: "Failed to post_process_message" in worker.output(), what="a refused dead letter")
        assert depth(amqp_url, "maintenance.XQ") == 0
    # Then once the queue accepts again, the dead letter arrives: the original was kept, not acked
    [dead] = take(amqp_url, "maintenance.XQ", 1, timeout=30)
    assert dead.message()["message_id"] == sent["message_id"]
    assert dead.headers["x-edujobs-reason"] == "permanent_error"
    # And the worker's log of the refused attempts names the message, never its arguments
    assert f"testing.fail_permanently({sent['message_id']})" in worker.output()
    assert "user_id=4" not in worker.output() and "'user_id': 4" not in worker.output()
    # And it ran once, and the original was acked: once the worker stops, nothing comes back
    assert recorded(redis_key) == ["attempt"]
    worker.stop()
    assert depth(amqp_url, "maintenance") == 0
