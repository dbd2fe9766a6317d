"""Metrics on the real RabbitMQ: queue depths from the management API, dead letters from the broker.

Each test has its own vhost. RabbitMQ refreshes the management API's figures every 5 s, so depth
checks poll until the figures arrive.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator

import dramatiq
import pika
import pytest
from prometheus_client import CollectorRegistry

from brokers.queue_stats import QueueDepth, QueueStatsCollector, QueueStatsReader, vhost_of
from brokers.rabbitmq import EdujobsBroker
from brokers.settings import Settings
from brokers.stack import build_broker
from contracts.errors import PermanentError
from middleware.metrics import Metrics
from tests.amqp import depth, dramatiq_message, publish
from tests.services import MANAGEMENT_URL

KEY = b"test-signing-key"


def management_url() -> str:
    parts = urllib.parse.urlsplit(MANAGEMENT_URL)
    return parts._replace(netloc=f"guest:guest@{parts.netloc}").geturl()


@pytest.fixture
def broker(amqp_url: str) -> Iterator[EdujobsBroker]:
    settings = Settings(
        rabbitmq_url=amqp_url,
        signing_key=KEY.decode(),
        record_job_state=False,
        metrics_port=9191,
    )
    broker = build_broker(settings)
    broker.declare_topology(("notifications", "maintenance"))
    yield broker
    broker.close()


@pytest.fixture
def reader(amqp_url: str, broker: EdujobsBroker) -> Iterator[QueueStatsReader]:
    reader = QueueStatsReader(
        management_url=management_url(), vhost=vhost_of(amqp_url), queues=("notifications", "maintenance")
    )
    yield reader
    reader.close()


def publish_at(url: str, queue: str, count: int, *, timestamp: int | None) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for _ in range(count):
            properties = pika.BasicProperties(delivery_mode=2, priority=5, timestamp=timestamp)
            channel.basic_publish("", queue, b"{}", properties, mandatory=True)
    finally:
        connection.close()


def poll(read: Callable[[], QueueDepth], check: Callable[[QueueDepth], bool]) -> QueueDepth:
    deadline = time.monotonic() + 20
    while True:
        found = read()
        if check(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def test_depths_by_kind_and_the_oldest_messages_age(amqp_url: str, reader: QueueStatsReader) -> None:
    # Given messages in every companion queue of `notifications`, the oldest stamped two minutes ago
    now = int(time.time())
    publish_at(amqp_url, "notifications", 1, timestamp=now - 120)
    publish_at(amqp_url, "notifications", 2, timestamp=now)
    publish_at(amqp_url, "notifications.DQ", 2, timestamp=None)
    publish_at(amqp_url, "notifications.park", 1, timestamp=None)
    publish_at(amqp_url, "notifications.XQ", 4, timestamp=None)
    # And messages without the AMQP timestamp property (as Dramatiq publishes them) in `maintenance`
    publish_at(amqp_url, "maintenance", 2, timestamp=None)
    # When the depths are read
    found = poll(
        lambda: reader.read()[0],
        lambda d: (
            (d.ready, d.delayed, d.waiting, d.dead) == (3, 2, 1, 4) and d.oldest_age_seconds is not None
        ),
    )
    # Then each kind has its count, and the age is the oldest ready message's
    assert (found.queue, found.ready, found.unacked, found.delayed, found.waiting, found.dead) == (
        "notifications",
        3,
        0,
        2,
        1,
        4,
    )
    assert found.oldest_age_seconds is not None and 120 <= found.oldest_age_seconds < 180
    # And nothing was consumed or reordered to find this out
    assert depth(amqp_url, "notifications.XQ") == 4

    # When Prometheus scrapes
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(reader))
    poll(lambda: reader.read()[1], lambda d: d.ready == 2)

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    # Then it gets the depths; without timestamps the age is absent (rather than a wrong 0)
    assert get("edujobs_queue_stats_up") == 1
    assert get("edujobs_queue_messages", queue="notifications", kind="dead") == 4
    assert get("edujobs_queue_messages", queue="maintenance", kind="ready") == 2
    assert get("edujobs_queue_messages", queue="maintenance", kind="dead") == 0
    assert get("edujobs_queue_oldest_message_age_seconds", queue="maintenance") is None


def test_an_unknown_vhost_is_a_failed_read_not_a_crash() -> None:
    missing = QueueStatsReader(management_url=management_url(), vhost="edujobs-no-such-vhost")
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(missing))
    assert registry.get_sample_value("edujobs_queue_stats_up") == 0
    assert registry.get_sample_value("edujobs_queue_messages", {"queue": "media", "kind": "ready"}) is None
    missing.close()


def test_each_dead_letter_is_counted_once_with_its_reason(amqp_url: str, broker: EdujobsBroker) -> None:
    metrics = next(m for m in broker.middleware if isinstance(m, Metrics))

    @dramatiq.actor(broker=broker, queue_name="maintenance", actor_name="testing.metrics_refuse")
    def refuse() -> None:
        raise PermanentError("no such student")

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        # When one message fails permanently and one body cannot be decoded
        publish(
            amqp_url, "maintenance", dramatiq_message("testing.metrics_refuse", "maintenance", {}, key=KEY)
        )
        publish(amqp_url, "maintenance", b"\x00 not a message")
        deadline = time.monotonic() + 20
        while depth(amqp_url, "maintenance.XQ") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()

    # Then each dead letter is counted once, by its queue and reason
    def get(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert get("edujobs_dead_letters_total", queue="maintenance", reason="permanent_error") == 1
    assert get("edujobs_dead_letters_total", queue="maintenance", reason="undecodable") == 1
    labels = {"queue": "maintenance", "actor": "testing.metrics_refuse"}
    assert get("edujobs_messages_total", outcome="failed", **labels) == 1
    assert get("edujobs_messages_in_flight", **labels) == 0
