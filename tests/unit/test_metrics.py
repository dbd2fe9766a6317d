"""Metrics in-process: edujobs' middleware stack on a StubBroker, values read from the Metrics registry.

Outside the dramatiq CLI, values stay in the process (no multiprocess files); the e2e tests run a pool of
worker processes and scrape the sum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from brokers.settings import Settings
from brokers.stack import build_middleware
from contracts.errors import PermanentError, ProviderUnavailableError, TransientError
from middleware.circuit_breakers import CircuitBreakers
from middleware.metrics import (
    DURATION_BUCKETS,
    Metrics,
    make_metrics_server,
    observe_many,
    pool_directory,
    prepare_pool_directory,
    record_breaker_state,
    record_schedule_success,
)

QUEUE = "default"


class SkipWhenAsked(Middleware):
    """Skips a message that asks for it, as a middleware that postpones work would."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.args == ("postponed",):
            raise SkipMessage("asked to")


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=build_middleware(Settings(record_job_state=False, metrics_port=9191)))
    broker.add_middleware(SkipWhenAsked())
    broker.emit_after("process_boot")
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def metrics(broker: StubBroker) -> Metrics:
    return next(m for m in broker.middleware if isinstance(m, Metrics))


@pytest.fixture
def worker(broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def outcomes(metrics: Metrics, actor: str) -> dict[str, float]:
    outcomes = ("succeeded", "retried", "failed", "dead_lettered", "skipped")
    return {
        o: value(metrics, "edujobs_messages_total", queue=QUEUE, actor=actor, outcome=o)
        for o in outcomes
        if value(metrics, "edujobs_messages_total", queue=QUEUE, actor=actor, outcome=o)
    }


def test_a_successful_message_is_counted_and_timed(
    broker: StubBroker, worker: dramatiq.Worker, metrics: Metrics
) -> None:
    # Given an actor that succeeds
    @dramatiq.actor(broker=broker, actor_name="tests.succeed", queue_name=QUEUE)
    def succeed() -> None:
        pass

    # When it processes three messages
    for _ in range(3):
        succeed.send()
    broker.join(QUEUE, fail_fast=False)
    worker.join()
    # Then three successes are counted and timed, and none is left in flight
    assert outcomes(metrics, "tests.succeed") == {"succeeded": 3}
    labels = {"queue": QUEUE, "actor": "tests.succeed"}
    assert value(metrics, "edujobs_message_duration_seconds_count", **labels) == 3
    assert value(metrics, "edujobs_message_duration_seconds_bucket", le="+Inf", **labels) == 3
    assert value(metrics, "edujobs_messages_in_flight", **labels) == 0
    assert value(metrics, "edujobs_retries_total", **labels) == 0


def test_a_transient_failure_is_retried_then_fails_when_retries_run_out(
    broker: StubBroker, worker: dramatiq.Worker, metrics: Metrics
) -> None:
    # Given an actor that always fails transiently, with one retry
    @dramatiq.actor(
        broker=broker,
        actor_name="tests.flaky",
        queue_name=QUEUE,
        max_retries=1,
        min_backoff=10,
        max_backoff=20,
    )
    def flaky() -> None:
        raise TransientError("the provider is down")

    # When it processes one message
    flaky.send()
    broker.join(QUEUE, fail_fast=False)
    worker.join()
    # Then the first attempt is counted as retried (one retry spent), the second as failed
    assert outcomes(metrics, "tests.flaky") == {"retried": 1, "failed": 1}
    labels = {"queue": QUEUE, "actor": "tests.flaky"}
    assert value(metrics, "edujobs_retries_total", **labels) == 1
    assert value(metrics, "edujobs_message_duration_seconds_count", **labels) == 2
    assert len(broker.dead_letters) == 1


def test_a_permanent_error_fails_at_once_without_spending_a_retry(
    broker: StubBroker, worker: dramatiq.Worker, metrics: Metrics
) -> None:
    @dramatiq.actor(broker=broker, actor_name="tests.refuse", queue_name=QUEUE)
    def refuse() -> None:
        raise PermanentError("unknown user")

    refuse.send()
    broker.join(QUEUE, fail_fast=False)
    worker.join()
    assert outcomes(metrics, "tests.refuse") == {"failed": 1}
    assert value(metrics, "edujobs_retries_total", queue=QUEUE, actor="tests.refuse") == 0


def test_rejected_and_skipped_messages_are_counted_without_a_duration(
    broker: StubBroker, worker: dramatiq.Worker, metrics: Metrics
) -> None:
    ran: list[str] = []

    @dramatiq.actor(broker=broker, actor_name="tests.guarded", queue_name=QUEUE)
    def guarded(label: str) -> None:
        ran.append(label)

    # Given a message with a forged signature (put on the queue directly: this process would refuse
    # to send it) and one that a middleware skips
    forged: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE,
        actor_name="tests.guarded",
        args=("forged",),
        kwargs={},
        options={"signature": "0" * 64},
    )
    broker.queues[QUEUE].put(forged.encode())
    guarded.send("postponed")
    broker.join(QUEUE, fail_fast=False)
    worker.join()
    # Then neither ran: the forged one was dead-lettered, the other skipped
    assert ran == []
    assert outcomes(metrics, "tests.guarded") == {"dead_lettered": 1, "skipped": 1}
    labels = {"queue": QUEUE, "actor": "tests.guarded"}
    assert value(metrics, "edujobs_message_duration_seconds_count", **labels) == 0
    assert value(metrics, "edujobs_messages_in_flight", **labels) == 0


def test_a_running_message_is_in_flight(
    broker: StubBroker, worker: dramatiq.Worker, metrics: Metrics
) -> None:
    started, release = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, actor_name="tests.slow", queue_name=QUEUE)
    def slow() -> None:
        started.set()
        release.wait(10)

    slow.send()
    assert started.wait(10)
    labels = {"queue": QUEUE, "actor": "tests.slow"}
    assert value(metrics, "edujobs_messages_in_flight", **labels) == 1
    release.set()
    broker.join(QUEUE, fail_fast=False)
    worker.join()
    assert value(metrics, "edujobs_messages_in_flight", **labels) == 0


def test_a_scheduled_job_records_its_last_success(
    broker: StubBroker, worker: dramatiq.Worker, metrics: Metrics
) -> None:
    @dramatiq.actor(broker=broker, actor_name="tests.nightly", queue_name=QUEUE)
    def nightly() -> None:
        pass

    nightly.send_with_options(schedule="nightly-cleanup")
    broker.join(QUEUE, fail_fast=False)
    worker.join()
    last = value(metrics, "edujobs_schedule_last_success_timestamp_seconds", schedule="nightly-cleanup")
    assert last > 1_700_000_000
    record_schedule_success("weekly-trends", at=1_800_000_000.0)
    assert value(metrics, "edujobs_schedule_last_success_timestamp_seconds", schedule="weekly-trends") == (
        1_800_000_000.0
    )


def test_dead_letters_are_counted_by_queue_and_reason(broker: StubBroker, metrics: Metrics) -> None:
    # EdujobsBroker calls this hook once per confirmed dead letter (the StubBroker does not).
    broker.emit_after("dead_letter", "notifications", {"reason": "bad_signature"}, None)
    broker.emit_after("dead_letter", "notifications", {"reason": "bad_signature"}, None)
    broker.emit_after("dead_letter", "media", {"reason": "undecodable"}, None)
    assert value(metrics, "edujobs_dead_letters_total", queue="notifications", reason="bad_signature") == 2
    assert value(metrics, "edujobs_dead_letters_total", queue="media", reason="undecodable") == 1


def test_breaker_states_are_recorded_by_provider(metrics: Metrics) -> None:
    record_breaker_state("sendgrid", "open")
    record_breaker_state("twilio", "closed")
    assert value(metrics, "edujobs_circuit_breaker_state", provider="sendgrid") == 2
    assert value(metrics, "edujobs_circuit_breaker_state", provider="twilio") == 0
    record_breaker_state("sendgrid", "half-open")
    assert value(metrics, "edujobs_circuit_breaker_state", provider="sendgrid") == 1
    record_breaker_state("sendgrid", "sideways")  # unknown: ignored
    assert value(metrics, "edujobs_circuit_breaker_state", provider="sendgrid") == 1


def test_breaker_transitions_are_counted_by_provider_and_state(broker: StubBroker, metrics: Metrics) -> None:
    # Given the stack's circuit breakers (in-process state), whose states are heard at boot
    breakers = next(m for m in broker.middleware if isinstance(m, CircuitBreakers)).breakers
    breakers.announce()
    sendgrid = breakers.get("sendgrid")
    # When SendGrid fails until its breaker opens, the reset timeout passes and a trial call succeeds
    for _ in range(sendgrid.fail_max):
        with pytest.raises(ProviderUnavailableError), breakers.guard("sendgrid"):
            raise ProviderUnavailableError("503 from SendGrid")
    sendgrid.storage.opened_at = datetime.now(UTC) - timedelta(seconds=sendgrid.reset_timeout + 1)
    with breakers.guard("sendgrid"):
        pass

    # Then each transition is counted once by the state entered; the boot announcement is none
    def transitions(provider: str, state: str) -> float:
        return value(metrics, "edujobs_circuit_breaker_transitions_total", provider=provider, state=state)

    assert transitions("sendgrid", "open") == 1
    assert transitions("sendgrid", "half-open") == 1
    assert transitions("sendgrid", "closed") == 1
    assert transitions("twilio", "closed") == 0
    assert value(metrics, "edujobs_circuit_breaker_state", provider="sendgrid") == 0


def test_metrics_can_be_disabled_with_port_zero() -> None:
    stack = build_middleware(Settings(record_job_state=False, metrics_port=0))
    assert not any(isinstance(m, Metrics) for m in stack)


def test_the_exposition_forks_only_when_given() -> None:
    assert Metrics().forks == []
    [fork] = next(
        m for m in build_middleware(Settings(record_job_state=False)) if isinstance(m, Metrics)
    ).forks
    assert f"{fork.__module__}:{fork.__name__}" == "brokers.queue_stats:run_metrics_server"


class FixedCollector:
    def collect(self) -> list[Metric]:
        gauge = GaugeMetricFamily("edujobs_test_answer", "A fixed value.")
        gauge.add_metric([], 42)
        return [gauge]


def test_the_server_serves_the_pool_files_and_collectors_on_its_host_only(tmp_path: Path) -> None:
    server = make_metrics_server(
        host="127.0.0.1", port=0, directory=str(tmp_path), collectors=[FixedCollector()]
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "edujobs_test_answer 42.0" in body
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_busy_port_is_an_error(tmp_path: Path) -> None:
    first = make_metrics_server(host="127.0.0.1", port=0, directory=None)
    try:
        with pytest.raises(OSError):
            make_metrics_server(host="127.0.0.1", port=first.server_address[1], directory=None)
    finally:
        first.server_close()


def test_outside_the_dramatiq_cli_values_stay_in_the_process(tmp_path: Path, metrics: Metrics) -> None:
    assert pool_directory(str(tmp_path)) is None
    assert metrics.pool_directory is None


def test_boot_removes_the_files_of_pools_that_stopped(tmp_path: Path) -> None:
    # Given the directory of a pool whose master has exited, and of one still running
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    stale = tmp_path / f"pool-{int(ended.stdout)}"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    running = tmp_path / f"pool-{os.getppid()}"
    running.mkdir()
    (tmp_path / "notes.txt").write_text("not ours")
    # When a worker of a new pool boots
    mine = tmp_path / "pool-999999999"
    prepare_pool_directory(str(tmp_path), str(mine))
    # Then only the stopped pool's files are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", running.name, mine.name])


def test_observing_many_values_at_once_counts_as_observing_each() -> None:
    # Given two histograms with edujobs' buckets, and values on, between and beyond the bounds
    registry = CollectorRegistry()
    one = Histogram("one", "", buckets=DURATION_BUCKETS, registry=registry)
    many = Histogram("many", "", buckets=DURATION_BUCKETS, registry=registry)
    values = [0.0, 0.005, 0.0051, 0.3, 1.0, 2.4999, 3600.0, 5000.0]
    # When one observes them one by one and the other all at once
    for v in values:
        one.observe(v)
    observe_many(many, values)

    # Then every bucket, the count and the sum agree
    def samples(name: str) -> list[tuple[str, str, float]]:
        family = next(f for f in registry.collect() if f.name == name)
        return [
            (s.name.removeprefix(name), s.labels.get("le", ""), round(s.value, 9))
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples("one") == samples("many")


def test_pending_changes_are_applied_by_the_flusher_within_its_interval() -> None:
    # Given a metrics middleware flushing every 50 ms, and a worker
    metrics = Metrics(flush_interval=0.05)
    broker = StubBroker(middleware=[metrics])
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:

        @dramatiq.actor(broker=broker, actor_name="tests.flushed", queue_name=QUEUE)
        def flushed() -> None:
            pass

        flushed.send()
        broker.join(QUEUE, fail_fast=False)
        worker.join()
        # Then, without anything reading the registry, the flusher writes the success
        deadline = time.monotonic() + 5
        while metrics._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not metrics._pending
        assert (
            metrics.metrics.registry.get_sample_value(
                "edujobs_messages_total", {"queue": QUEUE, "actor": "tests.flushed", "outcome": "succeeded"}
            )
            == 1
        )
    finally:
        worker.stop()
