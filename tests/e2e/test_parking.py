"""Parking is at least once: a parked message reaches its delay queue even if that queue is missing or
refusing when the message's hop ends (finding: a classic queue's dead-lettering dropped it).

RabbitMQ's at-least-once dead-lettering retries an unconfirmed hop every 3 minutes
(``dead_letter_worker_publisher_confirm_timeout``), so this test takes minutes: it is in the
``faults`` suite (``make test-faults``), not in ``make test``.
"""

from __future__ import annotations

import time
import urllib.parse

import pika
import pytest
import redis

from brokers.settings import Settings
from brokers.stack import build_broker
from tests.amqp import depth, dramatiq_message, publish
from tests.services import management_get
from tests.worker import WorkerProcess, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

KEY = b"test-signing-key"


def queue_stats(url: str, queue: str) -> dict[str, object]:
    vhost = urllib.parse.quote(urllib.parse.unquote(url.rsplit("/", 1)[1]), safe="")
    stats: dict[str, object] = management_get(f"/api/queues/{vhost}/{queue}")
    return stats


def test_a_parked_message_whose_delay_queue_is_missing_at_its_hop_arrives_once_it_is_back(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given the topology with a 1-second park hop, then maintenance.DQ deleted (an operator's
    # mistake, a half-finished migration), and beside it a classic queue parking the old way
    broker = build_broker(Settings(rabbitmq_url=amqp_url, park_hop_seconds=1))
    broker.declare_topology(("maintenance",))
    broker.close()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_delete("maintenance.DQ")
    classic = {
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "maintenance.DQ",
    }
    channel.queue_declare("old-style.wait", durable=True, arguments=classic)
    connection.close()
    # When a message due in a moment is parked in both, and their hop ends while .DQ is missing
    due = int(time.time() * 1000) + 2000
    for queue in ("maintenance.park", "old-style.wait"):
        parked = dramatiq_message("testing.record", "maintenance.DQ", {"value": queue}, key=KEY,
                                  options={"eta": due, "not_before": due})  # fmt: skip
        publish(amqp_url, queue, parked)
    wait_until(lambda: queue_stats(amqp_url, "maintenance.park").get("messages_dlx") == 1, timeout=60,
               what="the parked message's hop pending in maintenance.park")  # fmt: skip
    wait_until(lambda: depth(amqp_url, "old-style.wait") == 0, what="the classic queue's hop")
    # Then the classic queue lost its message, while .park still holds its own
    stats = queue_stats(amqp_url, "maintenance.park")
    assert stats.get("messages_dlx") == 1 and stats.get("messages_ready") in (0, None)
    # And once a worker declares .DQ again, the parked message arrives there and runs, once
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key, "EDUJOBS_PARK_HOP_SECONDS": "1"}
    worker = WorkerProcess(env, threads=1, module="tests.e2e.actors_testing").wait_ready()
    try:
        try:
            wait_until(
                lambda: redis.Redis().llen(redis_key) >= 1, timeout=400, what="the parked message running"
            )
        except AssertionError:
            raise AssertionError(worker.output()[-5000:]) from None
        assert [v.decode() for v in redis.Redis().lrange(redis_key, 0, -1)] == ["maintenance.park"]
    finally:
        worker.stop()
