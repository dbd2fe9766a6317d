"""A worker facing a queue declared with other arguments stops at boot with a clear message."""

from __future__ import annotations

import pika
import pytest

from tests.worker import WorkerProcess


@pytest.mark.parametrize(
    ("queue", "arguments"),
    [
        ("notifications", {"x-max-priority": 3}),  # another max priority
        ("notifications.XQ", {"x-message-ttl": 86_400_000}),  # another dead-letter retention
    ],
)
def test_the_worker_exits_at_boot_naming_the_mismatched_queue(
    edujobs_env: dict[str, str], amqp_url: str, queue: str, arguments: dict[str, int]
) -> None:
    # Given a queue created earlier with other arguments than edujobs declares
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(queue, durable=True, arguments=arguments)
    connection.close()
    # When a worker starts
    worker = WorkerProcess(edujobs_env)
    with pytest.raises(AssertionError, match="worker exited"):
        worker.wait_ready(timeout=60)
    # Then it has exited (no crash loop) and says which queue and what to do
    assert worker.stop() != 0
    output = worker.output()
    assert f"queue '{queue}' exists in RabbitMQ with other arguments" in output
