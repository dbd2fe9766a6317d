"""Raw pika publishing with a window of unconfirmed messages: the floor that edujobs' client is
measured against, and the fast way the throughput comparison pre-fills its queues.

pika's ``BlockingChannel.confirm_delivery()`` waits for each confirm before ``basic_publish``
returns. Here the channel's underlying (asynchronous) implementation is put in confirm mode with
our own callback, publishes only buffer frames, and ``_flush_output`` pumps the socket until the
number of unconfirmed messages is back under a low watermark. Refilling from the low watermark
rather than from "one slot free" keeps each pump doing a batch of work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import pika
import pika.spec

#: Unconfirmed messages in flight (edujobs' ``EDUJOBS_PUBLISH_CONFIRM_WINDOW`` default).
DEFAULT_WINDOW = 500

#: (routing key, body, AMQP priority or None): one message ready to publish.
Outgoing = tuple[str, bytes, int | None]


class PublishError(RuntimeError):
    """Raised when RabbitMQ nacked a message or did not confirm every message in time."""


class ConfirmWindowPublisher:
    """Publishes persistent messages on one connection, keeping up to ``window`` unconfirmed."""

    def __init__(
        self, url: str, *, window: int = DEFAULT_WINDOW, low_watermark: int | None = None, exchange: str = ""
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        #: Where messages go: the default exchange (routing key = queue), or e.g. ``edujobs.events``.
        self.exchange = exchange
        self.low_watermark = window // 2 if low_watermark is None else min(low_watermark, window - 1)
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self._impl = self.channel._impl
        self._published = 0
        self._confirmed_through = 0
        self._pending: set[int] = set()
        self._nacked = 0
        self._properties: dict[int | None, Any] = {}
        ready: list[bool] = []
        self._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _f: ready.append(True)
        )
        self.channel._flush_output(lambda: bool(ready))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        if method.multiple:
            # Every tag up to this one is confirmed; walk only the tags not walked before.
            confirmed = [t for t in range(self._confirmed_through + 1, tag + 1) if t in self._pending]
            self._pending.difference_update(confirmed)
            self._confirmed_through = max(self._confirmed_through, tag)
        else:
            confirmed = [tag] if tag in self._pending else []
            self._pending.discard(tag)
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked += len(confirmed)

    def _properties_for(self, priority: int | None) -> Any:
        properties = self._properties.get(priority)
        if properties is None:
            properties = self._properties[priority] = pika.BasicProperties(delivery_mode=2, priority=priority)
        return properties

    def publish(self, routing_key: str, body: bytes, priority: int | None = None) -> None:
        """Buffer one persistent message; pump I/O first if the window is full."""
        if len(self._pending) >= self.window:
            self.channel._flush_output(lambda: len(self._pending) <= self.low_watermark)
        self._impl.basic_publish(
            exchange=self.exchange,
            routing_key=routing_key,
            body=body,
            properties=self._properties_for(priority),
        )
        self._published += 1
        self._pending.add(self._published)

    def publish_all(self, messages: Iterable[Outgoing]) -> int:
        """Publish every message and wait until all are confirmed; return how many."""
        count = 0
        for routing_key, body, priority in messages:
            self.publish(routing_key, body, priority)
            count += 1
        self.wait()
        return count

    def wait(self, timeout: float = 120.0) -> None:
        """Pump I/O until every published message is confirmed; raise ``PublishError`` otherwise."""
        deadline = time.monotonic() + timeout
        self.channel._flush_output(lambda: not self._pending or time.monotonic() > deadline)
        if self._pending:
            raise PublishError(f"{len(self._pending)} messages not confirmed within {timeout}s")
        if self._nacked:
            nacked, self._nacked = self._nacked, 0
            raise PublishError(f"RabbitMQ nacked {nacked} messages")

    def declare_queue(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        """Declare a durable queue on this publisher's connection (its own channel)."""
        channel = self.connection.channel()
        channel.queue_declare(queue=name, durable=True, arguments=arguments)
        channel.close()

    def purge(self, name: str) -> None:
        channel = self.connection.channel()
        channel.queue_purge(queue=name)
        channel.close()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
