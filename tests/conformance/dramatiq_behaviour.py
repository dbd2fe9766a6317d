"""What a Dramatiq user expects of the middleware and the worker, where the sdist has no test for it.

Dramatiq's tests of its middleware (retries, shutdown) live in its repository's ``tests/middleware/``,
which the sdist leaves out, and its tests of odd ``eta`` values fill the StubBroker's in-memory
queue. These cases say the same expectations in our words, from Dramatiq's documented behaviour,
and run them like the sdist's tests: on a RabbitMQ vhost of their own, with ``rabbitmq_broker`` as
the full edujobs stack and as a bare ``EdujobsBroker`` with Dramatiq's default middleware. Where
edujobs differs, ``expectations`` says why. The file is not named ``test_*.py``: only
``python -m tests.conformance`` runs it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.common import dq_name

from brokers.rabbitmq import EdujobsBroker
from tests.amqp import depth, dramatiq_message, publish
from tests.conformance.plugin import SIGNING_KEY
from tests.worker import wait_until

#: Backoff small enough for a test: a retried message waits in the delay queue for 10 to 100 ms.
FAST: dict[str, Any] = {"min_backoff": 10, "max_backoff": 100}
#: Seconds these messages take at most to be done (a few attempts of a no-op, 100 ms apart).
DONE = 15


def dead_letters(broker: EdujobsBroker, queue: str) -> int:
    _, _, dead = broker.get_queue_message_counts(queue)
    return int(dead)


def test_retry_when_decides_whether_a_failure_is_retried(
    rabbitmq_broker: EdujobsBroker, rabbitmq_worker: Worker
) -> None:
    # Given an actor that always fails and whose retry_when allows three retries
    attempts: list[int] = []

    @dramatiq.actor(retry_when=lambda retries, exception: retries < 3, **FAST)
    def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("always")

    # When I send it a message
    flaky.send()

    # Then it runs four times (the first attempt and three retries) and is then dead-lettered
    wait_until(lambda: dead_letters(rabbitmq_broker, flaky.queue_name) == 1, DONE, "the dead letter")
    assert sum(attempts) == 4


def test_on_retry_exhausted_sends_a_message_to_the_named_actor(
    rabbitmq_broker: EdujobsBroker, rabbitmq_worker: Worker
) -> None:
    # Given an actor told on exhaustion, and an actor that fails with one retry allowed
    told: list[tuple[dict[str, Any], dict[str, Any]]] = []

    @dramatiq.actor
    def exhausted(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
        told.append((message, retry_info))

    @dramatiq.actor(max_retries=1, on_retry_exhausted=exhausted.actor_name, **FAST)
    def failing() -> None:
        raise RuntimeError("always")

    # When I send it a message and its retries run out
    sent = failing.send()
    wait_until(lambda: dead_letters(rabbitmq_broker, failing.queue_name) == 1, DONE, "the dead letter")
    rabbitmq_broker.join(exhausted.queue_name)
    rabbitmq_worker.join()

    # Then the exhaustion actor got the failed message and how many retries it had
    assert [(message["message_id"], info) for message, info in told] == [
        (sent.message_id, {"retries": 1, "max_retries": 1})
    ]


def test_expected_failures_are_not_logged_above_info(
    rabbitmq_broker: EdujobsBroker, rabbitmq_worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an actor that declares the exception it raises as expected (throws=)
    class ExpectedError(Exception):
        pass

    @dramatiq.actor(throws=(ExpectedError,))
    def refuse() -> None:
        raise ExpectedError("not this one")

    # When I send it a message and it fails, once and for good
    caplog.set_level(logging.INFO)
    refuse.send()
    wait_until(lambda: dead_letters(rabbitmq_broker, refuse.queue_name) == 1, DONE, "the dead letter")

    # Then nothing about it is logged above INFO: it was expected
    louder = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno > logging.INFO]
    assert louder == []


def test_a_message_interrupted_by_shutdown_spends_a_retry(rabbitmq_broker: EdujobsBroker) -> None:
    # Given an actor that may be interrupted by a shutdown and may not be retried, running a message
    running = threading.Event()

    @dramatiq.actor(max_retries=0, notify_shutdown=True)
    def long_job() -> None:
        running.set()
        for _ in range(300):
            time.sleep(0.1)

    worker = Worker(rabbitmq_broker, worker_threads=1)
    worker.start()
    long_job.send()
    assert running.wait(30), "the actor did not start"

    # When the worker shuts down while it runs
    worker.stop()

    # Then the interrupted attempt counted as its one attempt: the message is dead-lettered
    wait_until(lambda: sum(rabbitmq_broker.get_queue_message_counts(long_job.queue_name)) == 1)
    assert dead_letters(rabbitmq_broker, long_job.queue_name) == 1


@pytest.mark.parametrize("eta", ["not-a-number", None], ids=["non_numeric", "none"])
def test_an_odd_eta_means_now(
    rabbitmq_broker: EdujobsBroker, rabbitmq_worker: Worker, rabbitmq_url: str, eta: object
) -> None:
    # Given an actor, and its queue declared
    runs: list[int] = []

    @dramatiq.actor
    def record() -> None:
        runs.append(1)

    rabbitmq_broker.declare_queue(record.queue_name, ensure=True)

    # When another producer publishes a message for it whose eta is not a number
    body = dramatiq_message(
        record.actor_name, record.queue_name, {}, key=SIGNING_KEY.encode(), options={"eta": eta}
    )
    publish(rabbitmq_url, record.queue_name, body)

    # Then it runs at once, as Dramatiq's worker treats such an eta as "now" (and warns)
    wait_until(lambda: runs or dead_letters(rabbitmq_broker, record.queue_name), what="the run")
    assert runs == [1]
    assert depth(rabbitmq_url, dq_name(record.queue_name)) == 0
