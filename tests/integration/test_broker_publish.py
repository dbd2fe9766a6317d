"""What the edujobs broker publishes on the real RabbitMQ: timestamps, dead letters that arrive or
fail loudly, never vanish, and acks (batched by the consumer thread) that all arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pika
import pytest
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from brokers import dlq
from brokers.rabbitmq import EdujobsBroker
from brokers.settings import Settings
from brokers.stack import build_broker
from tests.amqp import depth
from tests.rabbitmq_policies import refusing


@pytest.fixture
def broker(amqp_url: str) -> Iterator[EdujobsBroker]:
    # Given the edujobs broker with the maintenance queues declared
    broker = build_broker(Settings(rabbitmq_url=amqp_url, metrics_port=0, record_job_state=False))
    broker.declare_topology(("maintenance", "notifications"))
    yield broker
    broker.close()


def get_one(url: str, queue: str) -> tuple[pika.BasicProperties, bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
        assert method is not None, f"{queue} is empty"
        return properties, body
    finally:
        connection.close()


def message(value: str) -> Message[object]:
    return Message(
        queue_name="maintenance", actor_name="testing.record", args=(), kwargs={"value": value}, options={}
    )


def test_enqueued_messages_carry_an_amqp_timestamp(broker: EdujobsBroker, amqp_url: str) -> None:
    # When a worker enqueues a message now, and another one delayed
    before = int(time.time())
    broker.enqueue(message("now"))
    broker.enqueue(message("later"), delay=60_000)
    # Then both carry the time they were published (RabbitMQ's oldest-message age reads it)
    for queue in ("maintenance", "maintenance.DQ"):
        properties, _ = get_one(amqp_url, queue)
        assert properties.timestamp is not None and before <= properties.timestamp <= time.time() + 1
        assert properties.delivery_mode == 2


def test_a_dead_letter_to_a_deleted_queue_declares_it_again(broker: EdujobsBroker, amqp_url: str) -> None:
    # Given an operator deleted maintenance.XQ by hand after the worker declared it
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_delete("maintenance.XQ")
    connection.close()
    # When a dead letter is published there
    broker.publish_confirmed("maintenance.XQ", b"dead", headers={"x-edujobs-reason": "failed"})
    # Then it arrives in the queue declared again, not confirmed into the void
    properties, body = get_one(amqp_url, "maintenance.XQ")
    assert body == b"dead" and properties.headers == {"x-edujobs-reason": "failed"}
    assert properties.timestamp is not None


@pytest.mark.faults
def test_a_dead_letter_refused_by_rabbitmq_is_an_error(broker: EdujobsBroker, amqp_url: str) -> None:
    # Given maintenance.XQ refuses every publish (a max-length 0, reject-publish policy)
    # When a dead letter is published there, then the publisher hears that RabbitMQ nacked it
    with refusing(amqp_url, "maintenance.XQ"), pytest.raises(ConnectionClosed, match="NACKed"):
        broker.publish_confirmed("maintenance.XQ", b"dead")
    assert depth(amqp_url, "maintenance.XQ") == 0


def test_dead_letter_headers_show_a_scrubbed_error_and_the_end_of_the_traceback(
    broker: EdujobsBroker, amqp_url: str
) -> None:
    # Given a failure whose error and long traceback name a parent's e-mail and phone number
    frames = "".join(f'  File "actors/x.py", line {n}, in step_{n}\n' for n in range(200))
    record = dlq.build_record(
        reason="permanent_error",
        actor_name="notifications.send_sms",
        worker="worker-1",
        exception_type="PermanentError",
        error="no account for parent@example.org (+33 6 12 34 56 78)",
        traceback=f"Traceback (most recent call last):\n{frames}PermanentError: unknown parent@example.org\n",
    )
    # When the broker dead-letters the message with that record
    broker.dead_letter("notifications", b"{}", record, priority=None)
    # Then the headers in notifications.XQ show the error and traceback without the personal data
    properties, _ = get_one(amqp_url, "notifications.XQ")
    headers = properties.headers
    assert headers["x-edujobs-error"] == "no account for [Filtered] ([Filtered])"
    traceback = headers["x-edujobs-traceback"]
    assert "parent@example.org" not in traceback
    # And the traceback is bounded, keeping its end, where the error was raised
    assert len(traceback) <= dlq.HEADER_TRACEBACK_LIMIT
    assert traceback.endswith("in step_199\nPermanentError: unknown [Filtered]\n")


def test_acks_from_many_threads_at_once_all_reach_rabbitmq(broker: EdujobsBroker, amqp_url: str) -> None:
    # Given 200 messages in a queue, consumed by the edujobs consumer with 50 prefetched
    for n in range(200):
        broker.enqueue(message(str(n)))
    consumer = broker.consume("maintenance", prefetch=50, timeout=100)
    received = []
    try:
        # When 8 threads ack them as they come, in bursts, while the consumer thread reads on
        lock = threading.Lock()
        done: list[object] = []

        def ack_all(batch: list[object]) -> None:
            for m in batch:
                consumer.ack(m)  # type: ignore[arg-type]
            with lock:
                done.extend(batch)

        deadline = time.monotonic() + 30
        while len(done) < 200 and time.monotonic() < deadline:
            m = next(consumer)
            if m is not None:
                received.append(m)
            if len(received) == 25 or (received and m is None):
                burst, received[:] = list(received), []
                for part in (burst[i::8] for i in range(8)):
                    threading.Thread(target=ack_all, args=(part,)).start()
        # Then every ack arrived: nothing is unacked, and nothing comes back once the consumer
        # has closed (an unacked message would be put back ready)
        assert len(done) == 200
    finally:
        consumer.close()
    assert depth(amqp_url, "maintenance") == 0
