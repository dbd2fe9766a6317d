"""Queue depths: how the management API's answer becomes gauges (httpx.MockTransport, no RabbitMQ)."""

from __future__ import annotations

import base64
import json
import logging
import socket
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from brokers.queue_stats import (
    QueueStatsCollector,
    QueueStatsReader,
    metrics_directory,
    run_metrics_server,
    vhost_of,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "/"),
        ("amqp://guest:guest@127.0.0.1:5672", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/", "/"),
        ("amqp://u:p@rabbit/edujobs", "edujobs"),
        ("amqps://u:p@rabbit/school%2Fprod?heartbeat=30", "school/prod"),
        ("amqp://u:p@a/one;amqp://u:p@b/one", "one"),
    ],
)
def test_the_vhost_is_the_amqp_urls_decoded_path(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


def test_the_metrics_directory_defaults_to_the_temp_dir() -> None:
    assert metrics_directory("/srv/metrics") == "/srv/metrics"
    assert metrics_directory(None).endswith("edujobs-metrics")


class FakeManagement:
    def __init__(self, answer: Any, status: int = 200) -> None:
        self.answer = answer
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=json.dumps(self.answer).encode())

    def reader(self, url: str = "http://ops:s3cret@rabbit:15672", vhost: str = "/") -> QueueStatsReader:
        return QueueStatsReader(
            management_url=url,
            vhost=vhost,
            queues=("notifications", "media"),
            transport=httpx.MockTransport(self),
            clock=lambda: NOW,
        )


LISTING = [
    {
        "name": "notifications",
        "messages": 7,
        "messages_ready": 5,
        "messages_unacknowledged": 2,
        "head_message_timestamp": int(NOW) - 90,
    },
    {"name": "notifications.DQ", "messages": 3, "messages_ready": 0, "messages_unacknowledged": 3},
    {"name": "notifications.wait", "messages": 1, "messages_ready": 1, "messages_unacknowledged": 0},
    {"name": "notifications.XQ", "messages": 12, "messages_ready": 12, "messages_unacknowledged": 0},
    {"name": "media", "messages": 4, "messages_ready": 4, "messages_unacknowledged": 0},
    {"name": "media.XQ"},  # just declared: no figures yet
    {"name": "someone-elses-queue", "messages": 99, "messages_ready": 99},
]


def test_one_request_with_the_urls_credentials_gives_every_kind() -> None:
    # Given the management API's listing of the vhost
    fake = FakeManagement(LISTING)
    reader = fake.reader()
    # When the depths are read
    notifications, media = reader.read()
    # Then one request went to the vhost's queues, authenticated with the URL's credentials
    [request] = fake.requests
    assert request.url.raw_path.split(b"?")[0] == b"/api/queues/%2F"
    assert "messages_ready" in request.url.params["columns"]
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"ops:s3cret").decode()
    assert "s3cret" not in str(request.url)  # httpx logs the URL
    # And each kind comes from its companion queue
    assert (notifications.ready, notifications.unacked, notifications.delayed) == (5, 2, 3)
    assert (notifications.waiting, notifications.dead, notifications.oldest_age_seconds) == (1, 12, 90.0)
    # And where RabbitMQ has no figure, there is none (not a made-up 0)
    assert (media.ready, media.delayed, media.dead) == (4, None, None)
    assert media.oldest_age_seconds is None  # ready messages without a timestamp
    reader.close()


def test_the_collector_serves_the_depths_as_gauges() -> None:
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(FakeManagement(LISTING).reader(vhost="school/prod")))

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert get("edujobs_queue_stats_up") == 1
    assert get("edujobs_queue_messages", queue="notifications", kind="ready") == 5
    assert get("edujobs_queue_messages", queue="notifications", kind="dead") == 12
    assert get("edujobs_queue_messages", queue="media", kind="dead") is None
    assert get("edujobs_queue_oldest_message_age_seconds", queue="notifications") == 90.0
    assert get("edujobs_queue_oldest_message_age_seconds", queue="media") is None


def test_an_empty_queue_has_age_zero() -> None:
    listing = [{"name": "media", "messages": 0, "messages_ready": 0, "messages_unacknowledged": 0}]
    [_, media] = FakeManagement(listing).reader().read()
    assert media.oldest_age_seconds == 0.0


@pytest.mark.parametrize(
    ("answer", "status"),
    [({"error": "not_authorised"}, 401), ({"error": "Object Not Found"}, 404), ({"not": "a list"}, 200)],
)
def test_a_refusing_management_api_is_reported_as_down(answer: Any, status: int) -> None:
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(FakeManagement(answer, status).reader()))
    assert registry.get_sample_value("edujobs_queue_stats_up") == 0
    assert registry.get_sample_value("edujobs_queue_messages", {"queue": "media", "kind": "ready"}) is None


def test_an_unreachable_management_api_is_reported_as_down() -> None:
    registry = CollectorRegistry()
    reader = QueueStatsReader(management_url="http://127.0.0.1:1", vhost="/", timeout=1)
    registry.register(QueueStatsCollector(reader))
    assert registry.get_sample_value("edujobs_queue_stats_up") == 0
    reader.close()


def test_a_pool_whose_port_is_taken_runs_on_without_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    httpx_logger = logging.getLogger("httpx")
    monkeypatch.setattr(httpx_logger, "level", httpx_logger.level)  # the metrics process quiets it
    # Given another pool already serving metrics on the port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("EDUJOBS_METRICS_PORT", str(port))
        # When this pool's metrics process starts, it says what to do and exits (the workers go on)
        assert run_metrics_server() == 1
    assert f"Cannot serve metrics on 127.0.0.1:{port}" in caplog.text
    assert "EDUJOBS_METRICS_PORT" in caplog.text


def test_the_oldest_dead_letter_and_the_dead_letter_ttl_are_gauges() -> None:
    # Given a Q.XQ whose oldest letter is 13 days old and whose TTL is 14 days, and an empty one
    listing = [
        {
            "name": "notifications.XQ",
            "messages": 2,
            "messages_ready": 2,
            "head_message_timestamp": int(NOW) - 13 * 86_400,
            "arguments": {"x-message-ttl": 14 * 86_400_000},
        },
        {"name": "media.XQ", "messages": 0, "messages_ready": 0, "arguments": {"x-message-ttl": 86_400_000}},
    ]
    registry = CollectorRegistry()
    registry.register(QueueStatsCollector(FakeManagement(listing).reader()))

    def get(name: str, queue: str) -> float | None:
        return registry.get_sample_value(name, {"queue": queue})

    # Then the collector serves both, per queue (0 for an empty Q.XQ)
    assert get("edujobs_dead_letter_oldest_age_seconds", "notifications") == 13 * 86_400
    assert get("edujobs_dead_letter_ttl_seconds", "notifications") == 14 * 86_400
    assert get("edujobs_dead_letter_oldest_age_seconds", "media") == 0
    assert get("edujobs_dead_letter_ttl_seconds", "media") == 86_400
