"""Retries on edujobs' middleware stack (StubBroker): Dramatiq's options honoured, nothing acked unsent.

The stub broker's dead letters are ``broker.dead_letters``; what Retries re-enqueues arrives in the
queue again (its delay lapses on the stub worker).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from brokers.settings import Settings
from brokers.stack import build_middleware
from contracts.errors import InProgressError, TransientError
from middleware.fate import death_of
from middleware.retries import Retries

QUEUE = "retries-test"


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=build_middleware(Settings(record_job_state=False, metrics_port=0)))
    broker.emit_after("process_boot")
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def worker(broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


def run(broker: StubBroker, worker: dramatiq.Worker) -> None:
    broker.join(QUEUE, fail_fast=False)
    worker.join()


def test_retry_when_decides_instead_of_max_retries(broker: StubBroker, worker: dramatiq.Worker) -> None:
    attempts: list[int] = []

    def until_three(retries: int, exception: BaseException) -> bool:
        return retries < 3 and isinstance(exception, TransientError)

    # Given an actor whose retry_when allows three retries (its max_retries says none)
    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0, min_backoff=1, retry_when=until_three)
    def flaky() -> None:
        attempts.append(1)
        raise TransientError("down")

    # When it fails every time
    flaky.send()
    run(broker, worker)
    # Then it ran four times (Dramatiq's semantics: the first run and three retries), then died
    assert len(attempts) == 4
    assert len(broker.dead_letters) == 1


def test_on_retry_exhausted_is_sent_the_message_and_its_retries(
    broker: StubBroker, worker: dramatiq.Worker
) -> None:
    received: list[tuple[dict[str, Any], dict[str, Any]]] = []

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="tests.exhausted")
    def exhausted(message: dict[str, Any], retries: dict[str, Any]) -> None:
        received.append((message, retries))

    @dramatiq.actor(
        broker=broker, queue_name=QUEUE, max_retries=1, min_backoff=1, on_retry_exhausted="tests.exhausted"
    )
    def doomed(user_id: int) -> None:
        raise TransientError("still down")

    # When an actor exhausts its retries
    sent = doomed.send(7)
    run(broker, worker)
    # Then its exhaustion handler ran with the message and its retry counts
    [(message, retries)] = received
    assert message["message_id"] == sent.message_id and message["args"] == [7]
    assert retries == {"retries": 1, "max_retries": 1}


def test_in_progress_waits_without_spending_a_retry(broker: StubBroker, worker: dramatiq.Worker) -> None:
    attempts: list[int] = []

    # Given an actor allowed no retry at all, whose side effect is held by another attempt twice
    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
    def waits() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise InProgressError("held by another attempt", retry_after=0.001)

    waits.send()
    run(broker, worker)
    # Then it waited twice and ran a third time, nothing dead-lettered
    assert len(attempts) == 3
    assert broker.dead_letters == []


def test_a_retry_that_cannot_be_enqueued_is_dead_lettered_with_the_reason() -> None:
    # Given a broker whose enqueue fails (RabbitMQ refuses the publish to Q.DQ)
    class Refusing:
        def get_actor(self, name: str) -> Any:
            return type("Actor", (), {"options": {}})()

        def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
            raise ConnectionError("notifications.DQ refused the publish")

    message = dramatiq.MessageProxy(
        dramatiq.Message(queue_name=QUEUE, actor_name="a", args=(), kwargs={}, options={})
    )
    # When an attempt fails transiently
    try:
        raise TransientError("provider down")
    except TransientError as e:
        Retries().after_process_message(Refusing(), message, exception=e)  # type: ignore[arg-type]
    # Then the message is failed (dead-lettered, not acked) with reason requeue_failed
    death = death_of(message)
    assert message.failed and death is not None and death.reason == "requeue_failed"
    assert "provider down" in str(death.error) and "refused the publish" in str(death.error)
