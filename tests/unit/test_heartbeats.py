"""The Heartbeats middleware on a StubBroker: what a beat says while messages run, fail and are
skipped, and that a clean stop is recorded."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage

from middleware.heartbeats import POOL_NAME_MAX, Heartbeats, pool_name
from tests.worker import wait_until


class Recorded:
    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []
        self.stops: list[str] = []
        self.sampled: list[tuple[str, ...]] = []

    def beat(self, beat: dict[str, Any]) -> None:
        self.beats.append(beat)

    def stopped(self, worker: str) -> None:
        self.stops.append(worker)


class SkipOdd(Middleware):
    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.kwargs.get("n", 0) % 2:
            raise SkipMessage()


def test_beats_count_in_flight_processed_and_failed_and_a_clean_stop_is_recorded() -> None:
    # Given a worker of two threads whose heartbeat middleware beats every 50 ms
    recorded = Recorded()
    heartbeats = Heartbeats(
        recorder=recorded, interval=0.05, pool="reports", sample_queues=recorded.sampled.append
    )
    broker = StubBroker(middleware=[heartbeats, SkipOdd()])
    release = threading.Event()

    @dramatiq.actor(broker=broker, actor_name="t.work", queue_name="reports")
    def work(n: int, fail: bool = False, hold: bool = False) -> None:
        if hold:
            release.wait(10)
        if fail:
            raise ValueError("boom")

    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        # When one message is held running, one fails, one succeeds and one is skipped
        work.send(n=0, hold=True)
        work.send(n=2, fail=True)
        work.send(n=4)
        work.send(n=1)
        wait_until(lambda: recorded.beats and recorded.beats[-1]["processed"] == 2, timeout=10)
        # Then the beats say so: one in flight, two processed (one failed), the skipped one not counted
        beat = recorded.beats[-1]
        assert (beat["in_flight"], beat["processed"], beat["failed"]) == (1, 2, 1)
        assert beat["pool"] == "reports" and beat["queues"] == ["reports"] and beat["threads"] == 2
        assert recorded.sampled and recorded.sampled[-1] == ("reports",)
        release.set()
        wait_until(lambda: recorded.beats[-1]["processed"] == 3 and recorded.beats[-1]["in_flight"] == 0)
    finally:
        release.set()
        worker.stop()
    # And the stop is recorded under the id the beats carried
    assert recorded.stops == [recorded.beats[-1]["id"]]


def test_a_pool_without_a_name_is_all_or_its_queues_shortened_to_fit_the_column() -> None:
    # A worker of every queue is "all"; one of a few queues is named after them
    assert pool_name(None, ("media", "reports")) == "all"
    assert pool_name({"media", "media.DQ"}, ("media",)) == "media"
    # A worker of many long queues (event handlers' queues are named after the handler) gets a name
    # that fits worker_heartbeats.pool, saying how many queues it left out
    queues = tuple(sorted(f"academics.on_event_number_{n:02d}" for n in range(12)))
    name = pool_name(set(queues), queues)
    assert len(name) <= POOL_NAME_MAX
    kept = name.split(",")[:-1]
    assert kept == list(queues[: len(kept)]) and name.endswith(f",…+{len(queues) - len(kept)}")
