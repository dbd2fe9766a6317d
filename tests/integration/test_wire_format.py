"""What ``brokers.client`` really puts on RabbitMQ matches docs/schemas/message.schema.json."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pika
import pytest

from brokers.client import Client
from brokers.settings import Settings
from brokers.stack import build_broker
from tests.unit.test_message_schema import validator

KEY = b"test-signing-key"


@pytest.fixture
def client(amqp_url: str) -> Iterator[Client]:
    broker = build_broker(Settings(rabbitmq_url=amqp_url))
    broker.declare_topology(("notifications",))
    broker.close()
    producer = Client(amqp_url, signing_key=KEY)
    yield producer
    producer.close()


def take(url: str, queue: str) -> dict[str, object]:
    """The one message in ``queue`` as the schema describes it: routing key, AMQP properties, body."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, f"nothing in {queue}"
    given = {
        "delivery_mode": properties.delivery_mode,
        "priority": properties.priority,
        "timestamp": properties.timestamp,
        "content_type": properties.content_type,
        "message_id": properties.message_id,
    }
    return {
        "exchange": method.exchange,
        "routing_key": method.routing_key,
        "properties": {k: v for k, v in given.items() if v is not None},
        "body": json.loads(body),
    }


def test_the_messages_the_client_publishes_match_the_message_schema(client: Client, amqp_url: str) -> None:
    # Given a message sent now and one delayed, as a service sends them
    client.send("notifications.send_email", {"user_id": 7, "template": "welcome"}, priority="high")
    client.send("notifications.send_sms", {"user_id": 7, "template": "iep_reminder"}, delay=3600)
    # When they are read back from RabbitMQ
    now, later = take(amqp_url, "notifications"), take(amqp_url, "notifications.DQ")
    # Then both match the published schema of a whole message
    schema = validator()
    assert [e.message for e in schema.iter_errors(now)] == []
    assert [e.message for e in schema.iter_errors(later)] == []
    assert now["properties"]["priority"] == 7  # type: ignore[index]
    # And a message that gained an option edujobs does not read on the way does not
    later["body"]["options"]["on_failure"] = "x"  # type: ignore[index]
    assert not schema.is_valid(later)
