"""The edujobs RabbitMQ broker: Dramatiq's broker with the topology and dead-lettering we need.

Differences from ``dramatiq.brokers.rabbitmq.RabbitmqBroker``:

- every work queue and delay queue is declared with ``x-max-priority``; ``Q.XQ`` keeps dead letters
  for the configured retention instead of the value Dramatiq reads from the environment at import;
- a declaration that disagrees with an existing queue (406 PRECONDITION_FAILED) raises
  ``TopologyError`` saying what differs and how to migrate, instead of a consumer restart loop;
- dead-lettering republishes the message to ``Q.XQ`` with its record (why, when, how often, where)
  and a publisher confirm *before* acking the original, instead of a bare nack that loses the why;
- its consumer (``brokers.consumer``) keeps undecodable bodies byte for byte, parks long delays and
  batches acks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import MAX_ENQUEUE_ATTEMPTS, RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from brokers import dlq
from brokers.consumer import EdujobsConsumer
from brokers.topology import (
    PARK_HOP_MS,
    PARK_THRESHOLD_MS,
    canonical,
    dead_letter_queue,
    delay_queue,
    wait_queue,
)
from contracts.errors import ConfigurationError

logger = logging.getLogger(__name__)


class TopologyError(ConfigurationError):
    """Raised when a queue already exists in RabbitMQ with other arguments than edujobs declares."""


class EdujobsBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker with edujobs' topology, dead letters and parking."""

    def __init__(
        self,
        *,
        url: str,
        max_priority: int,
        dead_letter_ttl_ms: int,
        worker_name: str,
        max_message_bytes: int | None = None,
        middleware: list[Middleware] | None = None,
        confirm_delivery: bool = True,
        park_threshold_ms: int = PARK_THRESHOLD_MS,
        park_hop_ms: int = PARK_HOP_MS,
    ) -> None:
        self._hook_cache: dict[str, tuple[Callable[..., None], ...]] = {}
        super().__init__(
            url=url,
            middleware=middleware,
            max_priority=max_priority,
            confirm_delivery=confirm_delivery,
        )
        self.dead_letter_ttl_ms = dead_letter_ttl_ms
        self.worker_name = worker_name
        self.max_message_bytes = max_message_bytes
        self.park_threshold_ms = park_threshold_ms
        self.park_hop_ms = park_hop_ms
        #: Queues operators paused: their consumers stop fetching (set by middleware.queue_pauses).
        self.paused_queues: frozenset[str] = frozenset()

    @property
    def consumer_class(self) -> Callable[..., _RabbitmqConsumer]:
        return EdujobsConsumer

    # -- topology -------------------------------------------------------------------------------

    def queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return dict(self._build_queue_arguments(canonical(queue_name)))

    def _declare(self, queue_name: str, arguments: dict[str, Any]) -> Any:
        try:
            return self.channel.queue_declare(queue=queue_name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as e:
            del self.channel
            if e.reply_code == 406:
                raise TopologyError(
                    f"queue {queue_name!r} exists in RabbitMQ with other arguments than edujobs declares "
                    f"({arguments}): {e.reply_text}. Queue arguments cannot change in place: drain the "
                    "queue and delete it (or move its messages with a shovel) so that it is declared "
                    "again, or set the previous value back (see README, 'Changing queue arguments')."
                ) from None
            raise

    def _declare_queue(self, queue_name: str) -> Any:
        result = self._declare(queue_name, self.queue_arguments(queue_name))
        self._declare(
            wait_queue(queue_name),
            {
                "x-message-ttl": self.park_hop_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": delay_queue(queue_name),
            },
        )
        return result

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declare(delay_queue(queue_name), self.queue_arguments(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self._declare(dead_letter_queue(queue_name), {"x-message-ttl": self.dead_letter_ttl_ms})

    def declare_topology(self, queues: tuple[str, ...]) -> None:
        """Declare the given domain queues (and their companions) on the server now."""
        for queue in queues:
            self.declare_queue(queue, ensure=True)

    # -- middleware dispatch ----------------------------------------------------------------------

    def _hooks(self, name: str) -> tuple[Callable[..., None], ...]:
        """The bound ``name`` hooks of the middleware that define it, in stack order.

        Dramatiq calls every middleware for every signal, and most hooks are ``Middleware``'s
        empty ones: with edujobs' stack that is some 70 calls per message, all but a dozen doing
        nothing. The list is built once per hook, and again after ``add_middleware`` (the way
        Dramatiq, and Sentry's integration, change a stack)."""
        hooks = self._hook_cache.get(name)
        if hooks is None:
            hooks = tuple(getattr(m, name) for m in self.middleware if _defines(m, name))
            self._hook_cache[name] = hooks
        return hooks

    def add_middleware(self, middleware: Middleware, **kwargs: Any) -> None:
        self._hook_cache = {}
        super().add_middleware(middleware, **kwargs)

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        # Declare every queue of the declared actors before the worker says it is ready, so a
        # message published right after start-up is never unroutable, and a topology mismatch
        # stops the worker at boot with TopologyError instead of crash-looping its consumers.
        if signal == "worker_boot":
            self.declare_topology(tuple(sorted(self.queues)))
        name = "before_" + signal
        for hook in self._hooks(name):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, _owner(hook), exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "after_" + signal
        for hook in reversed(self._hooks(name)):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, _owner(hook), exc_info=True)

    # -- publishing -----------------------------------------------------------------------------

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Dramatiq's ``enqueue``, with the AMQP ``timestamp`` it leaves out: RabbitMQ's
        head_message_timestamp, the oldest-message-age metric, is read from it."""
        canonical_queue_name = message.queue_name
        queue_name = canonical_queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        attempts = 0
        while True:
            try:
                self.declare_queue(canonical_queue_name, ensure=True)
                self.emit_before("enqueue", message, delay)
                self.channel.basic_publish(
                    exchange="",
                    routing_key=queue_name,
                    body=message.encode(),
                    properties=_properties(message.options.get("broker_priority")),
                    # Unroutable is only reported to a publisher in confirm mode.
                    mandatory=self.confirm_delivery,
                )
                self.emit_after("enqueue", message, delay)
                return message
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
                attempts = self._after_publish_error(e, queue_name, attempts)

    def publish_confirmed(
        self,
        routing_key: str,
        body: bytes,
        *,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish persistently on this thread's channel and wait for the broker's confirm.

        Unroutable (the queue is gone) or refused (nack) is a failure like a lost connection: the
        queue is declared again and the publish retried, then ``ConnectionClosed`` is raised, so
        that a caller never acks an original whose copy did not arrive.
        """
        if not self.confirm_delivery:
            raise RuntimeError("publish_confirmed needs confirm_delivery=True")
        properties = _properties(priority, headers)
        attempts = 0
        while True:
            try:
                self.declare_queue(canonical(routing_key), ensure=True)
                self.channel.basic_publish(
                    exchange="", routing_key=routing_key, body=body, properties=properties, mandatory=True
                )
                return
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
                attempts = self._after_publish_error(e, routing_key, attempts)
                time.sleep(min(0.1 * 2**attempts, 2))

    def _after_publish_error(self, error: pika.exceptions.AMQPError, routing_key: str, attempts: int) -> int:
        # A fresh connection and channel for the next attempt; a queue that was unroutable is
        # declared again (an operator may have deleted it). Returns the attempts made so far.
        del self.connection
        if isinstance(error, pika.exceptions.UnroutableError):
            self.queues_pending.add(canonical(routing_key))
        attempts += 1
        if attempts >= MAX_ENQUEUE_ATTEMPTS:
            raise ConnectionClosed(error) from None
        logger.debug("Retrying a publish to %s after %r (%d attempts).", routing_key, error, attempts)
        return attempts

    def dead_letter(
        self,
        queue_name: str,
        body: bytes,
        record: dict[str, Any],
        priority: int | None,
        message: Message[Any] | None = None,
    ) -> None:
        """Publish a dead letter to the dead-letter queue of ``queue_name``, confirmed, then tell the
        middleware that define ``after_dead_letter(broker, queue_name, record, message)`` (edujobs'
        one extra hook; ``message`` is None when the body could not be decoded)."""
        self.publish_confirmed(
            dead_letter_queue(queue_name), body, priority=priority, headers=dlq.record_headers(record)
        )
        self.emit_after("dead_letter", canonical(queue_name), record, message)
        logger.warning(
            "Dead-lettered a message from %s: %s (%s, fingerprint %s).",
            canonical(queue_name),
            record["reason"],
            record["exception_type"] or "no exception",
            record["fingerprint"],
        )


def _owner(hook: Callable[..., None]) -> object:
    return getattr(hook, "__self__", hook)


def _defines(middleware: Middleware, name: str) -> bool:
    """Whether ``middleware`` has a hook ``name`` of its own, not ``Middleware``'s empty one."""
    if name in vars(middleware):
        return True
    own = getattr(type(middleware), name, None)
    return own is not None and own is not getattr(Middleware, name, None)


def _properties(priority: int | None, headers: dict[str, Any] | None = None) -> pika.BasicProperties:
    # timestamp is in seconds, as AMQP has it.
    return pika.BasicProperties(
        delivery_mode=2, priority=priority, headers=headers, timestamp=int(time.time())
    )
