"""Queue depths over AMQP, for the backlog trend: a passive declare per queue, no management API.

``QueueDepthSampler`` keeps one connection (opened on first use, reopened after a failure) and
returns, per domain queue, the messages ready in it and those ready in its delay queue. A passive
declare neither creates nor changes a queue, and RabbitMQ answers it from the queue's own count,
so it costs the broker nothing the management API's statistics would not. Messages that a worker
holds (prefetched, or delayed in its memory) are not counted: the backlog is what waits for a
worker.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from brokers.topology import delay_queue

logger = logging.getLogger(__name__)


class QueueDepthSampler:
    """Reads ``{queue: (ready, ready in its delay queue)}`` from RabbitMQ."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._connection: pika.BlockingConnection | None = None
        self._lock = threading.Lock()

    def depths(self, queues: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        with self._lock:
            try:
                return {queue: (self._count(queue), self._count(delay_queue(queue))) for queue in queues}
            except pika.exceptions.AMQPError:
                self.close()
                raise

    def _channel(self) -> BlockingChannel:
        if self._connection is None or self._connection.is_closed:
            parameters = pika.URLParameters(self.url.split(";")[0])
            parameters.socket_timeout = self.timeout
            parameters.blocked_connection_timeout = self.timeout
            parameters.heartbeat = 60
            self._connection = pika.BlockingConnection(parameters)
        return self._connection.channel()

    def _count(self, queue: str) -> int:
        # A channel per declare: a 404 (queue not declared yet, so nothing waits) closes it.
        channel = self._channel()
        try:
            frame = channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        count = int(frame.method.message_count)
        channel.close()
        return count

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()
        self._connection = None
