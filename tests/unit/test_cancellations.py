"""The Cancellations middleware skips cancelled jobs' messages, from what it polled."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from middleware.cancellations import Cancellations


def test_a_worker_skips_the_cancelled_message_and_runs_the_other() -> None:
    # Given two messages, one of which an operator cancelled
    cancelled_ids: list[tuple[str, float]] = []
    cancellations = Cancellations(cancelled_since=lambda since: list(cancelled_ids), poll=0.05)
    broker = StubBroker(middleware=[cancellations, Retries()])
    broker.emit_after("process_boot")
    ran: list[int] = []

    @dramatiq.actor(broker=broker, actor_name="t.ran", max_retries=0)
    def record(n: int) -> None:
        ran.append(n)

    first = record.message(1)
    second = record.message(2)
    cancelled_ids.append((second.message_id, time.time()))
    # When a worker takes them
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        time.sleep(0.2)  # a poll
        broker.enqueue(first)
        broker.enqueue(second)
        broker.join("default")
        worker.join()
    finally:
        worker.stop()
    # Then only the first ran; the second was acknowledged without running, and not dead-lettered
    assert ran == [1]
    assert broker.dead_letters == []


def test_the_first_look_reaches_back_and_later_looks_overlap_a_little() -> None:
    asked: list[float] = []

    def cancelled_since(since: float) -> list[tuple[str, float]]:
        asked.append(since)
        return [("m-1", since + 1)] if len(asked) == 1 else []

    middleware = Cancellations(cancelled_since=cancelled_since, lookback=3600)
    before = time.time()
    assert middleware.refresh() == 1
    assert middleware.refresh() == 1  # what was seen stays known
    assert before - 3601 < asked[0] <= before - 3599
    assert time.time() - 31 < asked[1] < time.time() - 29


def test_a_failing_poll_keeps_what_was_known() -> None:
    calls = [0]

    def cancelled_since(since: float) -> list[tuple[str, float]]:
        calls[0] += 1
        if calls[0] > 1:
            raise ConnectionError("database down")
        return [("m-1", time.time())]

    middleware = Cancellations(cancelled_since=cancelled_since)
    middleware.refresh()
    assert middleware.refresh() == 1
    assert "m-1" in middleware.cancelled
