"""The queue topology, read back from RabbitMQ's management API."""

from __future__ import annotations

import urllib.parse

import pika
import pytest

from brokers.rabbitmq import TopologyError
from brokers.settings import Settings
from brokers.stack import build_broker
from brokers.topology import DOMAIN_QUEUES
from contracts.priorities import MAX_PRIORITY
from tests.amqp import take
from tests.services import management_get


def vhost_of(url: str) -> str:
    return urllib.parse.quote(urllib.parse.unquote(url.rsplit("/", 1)[1]), safe="")


def test_every_domain_queue_is_declared_durable_with_priority_delay_and_dead_letters(amqp_url: str) -> None:
    # Given the edujobs broker with a 3-day dead-letter retention
    broker = build_broker(Settings(rabbitmq_url=amqp_url, dead_letter_ttl_days=3))
    # When it declares the topology
    broker.declare_topology(DOMAIN_QUEUES)
    broker.close()
    # Then RabbitMQ holds, for each domain, the queue, its .DQ, .XQ and .park with the right arguments
    queues = {q["name"]: q for q in management_get(f"/api/queues/{vhost_of(amqp_url)}")}
    for domain in DOMAIN_QUEUES:
        main, delayed, dead, park = (queues[domain + s] for s in ("", ".DQ", ".XQ", ".park"))
        for queue in (main, delayed, dead, park):
            assert queue["durable"] is True
        assert main["arguments"]["x-max-priority"] == MAX_PRIORITY
        assert main["arguments"]["x-dead-letter-routing-key"] == f"{domain}.XQ"
        assert delayed["arguments"]["x-max-priority"] == MAX_PRIORITY
        assert dead["arguments"]["x-message-ttl"] == 3 * 86_400_000
        # .park hands its messages back to .DQ at least once (a quorum queue's dead-lettering)
        assert park["type"] == "quorum"
        assert park["arguments"]["x-dead-letter-routing-key"] == f"{domain}.DQ"
        assert park["arguments"]["x-dead-letter-strategy"] == "at-least-once"
        assert park["arguments"]["x-overflow"] == "reject-publish"
        assert park["arguments"]["x-message-ttl"] == 600_000


def test_an_earlier_versions_wait_queue_is_deleted_once_empty_and_drains_meanwhile(amqp_url: str) -> None:
    # Given the classic parking queues of an earlier version beside this version's queues:
    # media.wait empty, notifications.wait holding a message, both hopping back to .DQ after 10 s
    broker = build_broker(Settings(rabbitmq_url=amqp_url))
    broker.declare_topology(("media", "notifications"))
    legacy = {"x-message-ttl": 10_000, "x-dead-letter-exchange": ""}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for domain in ("media", "notifications"):
        channel.queue_declare(f"{domain}.wait", durable=True,
                              arguments={**legacy, "x-dead-letter-routing-key": f"{domain}.DQ"})  # fmt: skip
    channel.basic_publish("", "notifications.wait", b"parked", pika.BasicProperties(delivery_mode=2))
    connection.close()
    # When this version declares its topology again (a worker starts, `edujobs queues declare`)
    broker.declare_topology(("media", "notifications"))
    # Then the empty one is gone, the other is kept while its message moves on to .DQ by itself
    names = {q["name"] for q in management_get(f"/api/queues/{vhost_of(amqp_url)}")}
    assert "media.wait" not in names and "notifications.wait" in names
    [moved] = take(amqp_url, "notifications.DQ", 1, timeout=60)
    assert moved.body == b"parked"
    # And the next declaration, with it empty, deletes it
    broker.declare_topology(("notifications",))
    broker.close()
    names = {q["name"] for q in management_get(f"/api/queues/{vhost_of(amqp_url)}")}
    assert "notifications.wait" not in names


def test_a_queue_declared_otherwise_is_a_clear_topology_error(amqp_url: str) -> None:
    # Given a "media" queue created earlier without a priority argument
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare("media", durable=True)
    connection.close()
    # When edujobs declares its topology
    broker = build_broker(Settings(rabbitmq_url=amqp_url))
    # Then it fails with a message naming the queue and how to migrate
    with pytest.raises(TopologyError, match=r"queue 'media' exists in RabbitMQ with other arguments"):
        broker.declare_topology(("media",))
    broker.close()


def test_a_dead_letter_queue_with_another_retention_is_a_clear_topology_error(amqp_url: str) -> None:
    # Given "media.XQ" created earlier keeping dead letters 1 day, while edujobs now keeps them 14
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare("media.XQ", durable=True, arguments={"x-message-ttl": 86_400_000})
    connection.close()
    broker = build_broker(Settings(rabbitmq_url=amqp_url, dead_letter_ttl_days=14))
    # When edujobs declares its topology, then it fails at once, naming the queue and the argument
    with pytest.raises(TopologyError, match=r"queue 'media\.XQ' exists .*x-message-ttl") as error:
        broker.declare_topology(("media",))
    assert "drain the queue and delete it" in str(error.value)
    broker.close()
    # And the queue is as it was: nothing was deleted or redeclared behind the operator's back
    queues = {q["name"]: q for q in management_get(f"/api/queues/{vhost_of(amqp_url)}")}
    assert queues["media.XQ"]["arguments"] == {"x-message-ttl": 86_400_000}
