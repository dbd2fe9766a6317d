"""End to end: a pool of two worker processes serves its summed metrics and the queue depths.

The pool runs ``dramatiq tests.e2e.actors_testing --processes 2 --queues maintenance`` with
``EDUJOBS_METRICS_PORT`` set; messages come from the producer client. Nobody consumes ``notifications``,
so what is published there stays, and the depth gauges must show it.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from brokers.client import Client
from contracts import registry
from contracts.registry import ActorContract, Contract
from tests.worker import WorkerProcess

KEY = b"test-signing-key"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class RecordArgs(Contract):
    value: str
    sleep: float = 0.0


class FailPermanentlyArgs(Contract):
    user_id: int


class NoArgs(Contract):
    pass


@pytest.fixture
def test_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client validates against contracts; the test actors have none outside this test.
    registry.all_contracts()
    models: list[tuple[str, type[Contract]]] = [
        ("testing.record", RecordArgs),
        ("testing.fail_permanently", FailPermanentlyArgs),
        ("testing.fail_transiently", NoArgs),
    ]
    for name, model in models:
        monkeypatch.setitem(registry._CONTRACTS, name, ActorContract(name, "maintenance", "normal", model))


@pytest.fixture
def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pool(edujobs_env: dict[str, str], port: int, tmp_path: Path) -> Iterator[WorkerProcess]:
    key = f"edujobs-test:{uuid.uuid4().hex}"
    env = {
        **edujobs_env,
        "EDUJOBS_METRICS_PORT": str(port),
        "EDUJOBS_METRICS_DIR": str(tmp_path),
        "EDUJOBS_TEST_KEY": key,
    }
    process = WorkerProcess(
        env, processes=2, threads=2, queues=("maintenance",), module="tests.e2e.actors_testing"
    ).wait_ready()
    yield process
    process.stop()
    redis.Redis().delete(key)


@pytest.fixture
def client(edujobs_env: dict[str, str], test_contracts: None) -> Iterator[Client]:
    producer = Client(edujobs_env["EDUJOBS_RABBITMQ_URL"], signing_key=KEY)
    yield producer
    producer.close()


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(port: int, check: Callable[[Samples], bool], timeout: float = 30.0) -> Samples:
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            pass  # the pool's metrics process starts once every worker process is up
        else:
            if check(samples):
                return samples
        time.sleep(0.2)
    shown = "\n".join(f"{name}{dict(labels)} {v}" for (name, labels), v in sorted(samples.items()))
    raise AssertionError(f"metrics never matched; last scrape:\n{shown}")


def messages(samples: Samples, actor: str, outcome: str) -> float | None:
    return sample(samples, "edujobs_messages_total", queue="maintenance", actor=actor, outcome=outcome)


def test_a_pool_of_two_processes_serves_summed_totals_and_queue_depths(
    pool: WorkerProcess, client: Client, port: int, tmp_path: Path
) -> None:
    # Given a pool of two worker processes whose metrics endpoint answers
    wait_for(port, lambda s: sample(s, "edujobs_queue_stats_up") == 1)

    # When three emails and one delayed email wait in a queue that nobody consumes
    for user_id in (1, 2, 3):
        client.send("notifications.send_email", {"user_id": user_id, "template": "welcome"})
    client.send("notifications.send_email", {"user_id": 4, "template": "welcome"}, delay=3600)
    # And eight messages succeed, one fails permanently and one exhausts its two retries
    for i in range(8):
        client.send("testing.record", {"value": f"job-{i}", "sleep": 0.3})
    client.send("testing.fail_permanently", {"user_id": 4})
    client.send("testing.fail_transiently", {})

    # Then the totals, summed over both processes, count every attempt once (a dead letter is
    # written just after its failure is counted; an attempt's retry is counted after its re-enqueue,
    # so the other process may have run and dead-lettered the last attempt before it is counted)
    dead = "edujobs_dead_letters_total"
    samples = wait_for(
        port,
        lambda s: (
            messages(s, "testing.record", "succeeded") == 8
            and messages(s, "testing.fail_transiently", "failed") == 1
            and (messages(s, "testing.fail_transiently", "retried") or 0) >= 2
            and (
                sample(s, "edujobs_retries_total", queue="maintenance", actor="testing.fail_transiently") or 0
            )
            >= 2
            and messages(s, "testing.fail_permanently", "failed") == 1
            and sample(s, dead, queue="maintenance", reason="retries_exhausted") == 1
            and sample(s, dead, queue="maintenance", reason="permanent_error") == 1
        ),
    )
    assert messages(samples, "testing.fail_transiently", "retried") == 2
    assert messages(samples, "testing.record", "failed") == 0
    retries = sample(samples, "edujobs_retries_total", queue="maintenance", actor="testing.fail_transiently")
    assert retries == 2
    record = {"queue": "maintenance", "actor": "testing.record"}
    assert sample(samples, "edujobs_message_duration_seconds_count", **record) == 8
    assert (sample(samples, "edujobs_message_duration_seconds_sum", **record) or 0) >= 8 * 0.3
    assert sample(samples, "edujobs_messages_in_flight", **record) == 0
    # And both worker processes did part of the work (each wrote its own counters)
    assert len(list(tmp_path.glob("pool-*/counter_*.db"))) == 2

    # When a long message runs, it is in flight
    client.send("testing.record", {"value": "long", "sleep": 2})
    wait_for(port, lambda s: sample(s, "edujobs_messages_in_flight", **record) == 1)

    # And the queue gauges show what waits (RabbitMQ refreshes them every 5 s): the ready and
    # delayed emails, the two dead letters
    samples = wait_for(
        port,
        lambda s: (
            sample(s, "edujobs_queue_messages", queue="notifications", kind="ready") == 3
            and sample(s, "edujobs_queue_messages", queue="notifications", kind="delayed") == 1
            and sample(s, "edujobs_queue_messages", queue="maintenance", kind="dead") == 2
            # Q.park's figure appears once RabbitMQ has emitted that queue's first stats
            and sample(s, "edujobs_queue_messages", queue="notifications", kind="waiting") == 0
        ),
    )
    assert sample(samples, "edujobs_queue_messages", queue="maintenance", kind="ready") == 0
    assert sample(samples, "edujobs_queue_oldest_message_age_seconds", queue="maintenance") == 0

    # And once the long message is done, nothing is in flight
    samples = wait_for(port, lambda s: messages(s, "testing.record", "succeeded") == 9)
    assert sample(samples, "edujobs_messages_in_flight", **record) == 0

    # And the endpoint listens on the configured host only
    with pytest.raises(urllib.error.URLError):
        scrape(port, host="127.0.0.2")
    # And the management API's credentials stay out of the pool's log
    assert "guest:guest@127.0.0.1:15672" not in pool.output()
