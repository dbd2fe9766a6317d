"""The producer client against the real RabbitMQ: what it publishes, what it refuses, how it fails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from brokers.client import Client, PublishError
from brokers.settings import Settings
from brokers.stack import build_broker
from contracts.errors import ContractError
from tests.amqp import depth

KEY = b"test-signing-key"
ROOT = Path(__file__).resolve().parents[2]
EDUJOBS = str(Path(sys.executable).with_name("edujobs"))


@pytest.fixture
def client(amqp_url: str) -> Iterator[Client]:
    # Given the topology a worker declares, and a producer on this test's vhost
    broker = build_broker(Settings(rabbitmq_url=amqp_url))
    broker.declare_topology(("notifications",))
    broker.close()
    producer = Client(amqp_url, signing_key=KEY, confirm_window=100)
    yield producer
    producer.close()


def get_all(url: str, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Every message in ``queue``, taken (got and acked), with its AMQP properties."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    taken: list[tuple[pika.BasicProperties, bytes]] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((properties, body))
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_invalid_payload_is_refused_and_nothing_is_published(client: Client, amqp_url: str) -> None:
    # When a service sends a payload whose user_id is not a number
    with pytest.raises(ContractError, match="user_id"):
        client.send("notifications.send_email", {"user_id": "seven", "template": "welcome"})
    # And a batch whose third payload is invalid
    batch = [{"user_id": n, "template": "welcome"} for n in (1, 2)] + [{"user_id": 3}]
    with pytest.raises(ContractError, match="payload #2"):
        client.send_many("notifications.send_email", batch)
    # Then nothing at all reached RabbitMQ, not even the valid payloads of the batch
    assert depth(amqp_url, "notifications") == 0
    assert depth(amqp_url, "notifications.DQ") == 0


def test_send_many_publishes_every_message_with_pipelined_confirms(client: Client, amqp_url: str) -> None:
    # Given more messages than the client's confirm window (100) holds at once
    payloads = [{"user_id": n, "template": "welcome"} for n in range(1, 251)]
    # When they are sent in one call
    before = int(time.time())
    ids = client.send_many("notifications.send_email", payloads)
    # Then it returns one distinct id per payload, and every message is in the queue, in order
    assert len(ids) == 250 and len(set(ids)) == 250
    received = get_all(amqp_url, "notifications")
    messages = [json.loads(body) for _, body in received]
    assert [m["message_id"] for m in messages] == ids
    assert [m["kwargs"]["user_id"] for m in messages] == list(range(1, 251))
    # And each carries its id, persistence and an AMQP timestamp (the oldest-message-age metric)
    for properties, _ in received:
        assert properties.delivery_mode == 2
        assert properties.timestamp is not None and before <= properties.timestamp <= time.time() + 1
    assert [properties.message_id for properties, _ in received] == ids


def test_rabbitmq_down_is_a_publish_error(amqp_url: str) -> None:
    # Given a client pointed at a port where no RabbitMQ listens
    producer = Client(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", signing_key=KEY)
    # When a message is sent, then the failure is edujobs' PublishError saying where it tried
    with pytest.raises(PublishError, match=r"could not publish to RabbitMQ at 127\.0\.0\.1:\d+"):
        producer.send("notifications.send_email", {"user_id": 1, "template": "welcome"})
    producer.close()


def test_edujobs_send_with_rabbitmq_down_prints_an_error_not_a_traceback() -> None:
    # Given the CLI configured with a RabbitMQ that does not answer
    env = {
        **os.environ,
        "EDUJOBS_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "EDUJOBS_METRICS_PORT": "0",
    }
    # When an operator sends a message
    result = subprocess.run(
        [EDUJOBS, "send", "notifications.send_email", '{"user_id": 1, "template": "welcome"}'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it exits 1 with a one-line reason, and no Python traceback
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "could not publish to RabbitMQ" in output
    assert "Traceback" not in output
