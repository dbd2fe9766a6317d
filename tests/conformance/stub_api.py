"""The test API of Dramatiq's StubBroker, on edujobs' RabbitMQ broker.

Dramatiq's actor, worker and composition tests take a ``stub_broker`` and use three things the
RabbitMQ broker lacks: ``join(queue, fail_fast=..., timeout=...)``, which waits until every message
of the queue is done and then raises the exception of a dead-lettered one (how those tests see that
a time limit or an age limit struck), and ``dead_letters`` / ``dead_letters_by_queue``. This module
adds them to an ``EdujobsBroker`` without changing how it works: the consumer records what it
dead-letters after ``EdujobsConsumer.nack`` has done it, and ``join`` waits on RabbitMQ's counts and
on the consumers' unacknowledged deliveries (RabbitMQ's own ``join`` counts only ready messages, so
it may return while a message still runs).
"""

from __future__ import annotations

import time
import weakref
from collections import defaultdict
from typing import Any, cast

from dramatiq import Message, MessageProxy
from dramatiq.common import dq_name, q_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound

from brokers.consumer import EdujobsConsumer
from brokers.rabbitmq import EdujobsBroker

Failure = tuple[type[BaseException], tuple[Any, ...]]

#: As RabbitmqBroker.join: the queue must look idle this many times in a row, this far apart.
IDLE_CHECKS = 10
IDLE_INTERVAL = 0.1


class RecordingConsumer(EdujobsConsumer):
    """``EdujobsConsumer`` that tells its broker what it dead-lettered, with the exception."""

    broker: StubApiBroker

    def __init__(self, broker: StubApiBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        broker.stub_consumers.add(self)

    def nack(self, message: MessageProxy) -> None:
        # Dramatiq's worker drops the exception right after this call (so that its traceback's
        # frames are freed at once, which one of its tests checks): keep its type and arguments.
        exception = getattr(message, "_exception", None)
        super().nack(message)
        failure = (type(exception), exception.args) if exception is not None else None
        self.broker.dead_letters_by_queue[q_name(self.queue_name)].append((message._message, failure))


class StubApiBroker(EdujobsBroker):
    """An ``EdujobsBroker`` with StubBroker's ``join``, ``dead_letters`` and ``dead_letters_by_queue``."""

    stub_consumers: weakref.WeakSet[RecordingConsumer]
    #: Per canonical queue: each dead letter and the type and arguments of its exception.
    dead_letters_by_queue: defaultdict[str, list[tuple[Message[Any], Failure | None]]]
    fail_fast_default = True

    @property
    def consumer_class(self) -> Any:
        return RecordingConsumer

    @property
    def dead_letters(self) -> list[Message[Any]]:
        return [message for letters in self.dead_letters_by_queue.values() for message, _ in letters]

    def join(  # type: ignore[override]  # StubBroker's signature, which Dramatiq's stub tests call
        self, queue_name: str, *, timeout: int | None = None, fail_fast: bool | None = None
    ) -> None:
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        deadline = timeout and time.monotonic() + timeout / 1000
        idle = 0
        while idle < IDLE_CHECKS:
            if deadline and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)  # type: ignore[no-untyped-call]
            idle = idle + 1 if self._idle(queue_name) else 0
            time.sleep(IDLE_INTERVAL)
        if fail_fast if fail_fast is not None else self.fail_fast_default:
            for _, failure in self.dead_letters_by_queue[queue_name]:
                if failure is None:
                    raise Exception("Message failed with unknown error")
                exception_type, args = failure
                raise exception_type(*args)

    def _idle(self, queue_name: str) -> bool:
        ready, delayed, _ = self.get_queue_message_counts(queue_name)
        names = (queue_name, dq_name(queue_name))
        held = any(c.known_tags for c in self.stub_consumers if c.queue_name in names)
        return ready + delayed == 0 and not held


def with_stub_api(broker: EdujobsBroker) -> StubApiBroker:
    """``broker``, built as edujobs builds it, given StubBroker's test API before it consumes."""
    broker.__class__ = StubApiBroker
    adapted = cast(StubApiBroker, broker)
    adapted.stub_consumers = weakref.WeakSet()
    adapted.dead_letters_by_queue = defaultdict(list)
    return adapted
