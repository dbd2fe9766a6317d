"""The edujobs RabbitMQ broker: Dramatiq's broker with the topology and dead-lettering we need.

Differences from ``dramatiq.brokers.rabbitmq.RabbitmqBroker``:

- every work queue and delay queue is declared with ``x-max-priority`` (classic queues, the default) or
  as a quorum queue without it (``queue_type="quorum"``: replicated across a cluster; quorum queues
  refuse ``x-max-priority`` before RabbitMQ 4.0 and have two fixed priority levels from 4.0: README,
  "Quorum queues"); ``Q.XQ`` keeps dead letters for the configured retention instead of the value
  Dramatiq reads from the environment at import;
- a declaration that disagrees with an existing queue (406 PRECONDITION_FAILED) raises
  ``TopologyError`` saying what differs and how to migrate, instead of a consumer restart loop;
- dead-lettering republishes the message to ``Q.XQ`` with its record (why, when, how often, where)
  and a publisher confirm *before* acking the original, instead of a bare nack that loses the why;
- its consumer (``brokers.consumer``) checks every message on receipt (signature, options, queue),
  binds acks to the channel that delivered the message, keeps undecodable bodies byte for byte,
  parks long delays and batches acks;
- a message whose channel closed before a worker thread started it is not run (RabbitMQ has it
  back), and a copy of it (a retry, or Dramatiq moving it out of its in-memory delay queue) is not
  published;
- a publish that fails (connection lost, nacked, unroutable) is retried with backoff, then raises
  ``ConnectionClosed``: a caller never takes a message for sent when RabbitMQ did not confirm it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import MAX_ENQUEUE_ATTEMPTS, RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ActorNotFound, ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage

from brokers import dlq
from brokers.consumer import STALE, EdujobsConsumer, EdujobsMessage
from brokers.topology import (
    PARK_HOP_MS,
    PARK_THRESHOLD_MS,
    canonical,
    dead_letter_queue,
    delay_queue,
    legacy_wait_queue,
    park_queue,
)
from contracts.errors import ConfigurationError
from contracts.events import EVENTS_EXCHANGE, UNROUTED_EXCHANGE, UNROUTED_QUEUE, bound_events
from contracts.signing import SIGNATURE_OPTION, Keyring
from middleware.fate import ORIGIN, mark_dead

logger = logging.getLogger(__name__)


#: EDUJOBS_QUEUE_TYPE's values: the type of the work and delay queues (``Q.XQ`` stays classic).
QUEUE_TYPES = ("classic", "quorum")


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
        keyring: Keyring,
        max_message_bytes: int | None = None,
        middleware: list[Middleware] | None = None,
        confirm_delivery: bool = True,
        park_threshold_ms: int = PARK_THRESHOLD_MS,
        park_hop_ms: int = PARK_HOP_MS,
        queue_type: str = "classic",
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ConfigurationError(
                f"queue_type: expected one of {', '.join(QUEUE_TYPES)}, got {queue_type!r}"
            )
        self.queue_type = queue_type
        self._hook_cache: dict[str, tuple[Callable[..., None], ...]] = {}
        super().__init__(
            url=url,
            middleware=middleware,
            max_priority=max_priority,
            confirm_delivery=confirm_delivery,
        )
        self.dead_letter_ttl_ms = dead_letter_ttl_ms
        self.worker_name = worker_name
        #: The keys the consumer verifies received messages with.
        self.keyring = keyring
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
        """A work or delay queue's arguments: Dramatiq's (dead letters to ``Q.XQ``, ``x-max-priority``)
        for classic queues; for quorum queues the same without ``x-max-priority``, which RabbitMQ
        refuses on them before 4.0 (from 4.0 they have two priority levels without it: AMQP
        priorities above 4 before the rest)."""
        arguments = dict(self._build_queue_arguments(canonical(queue_name)))
        if self.queue_type == "quorum":
            arguments.pop("x-max-priority", None)
            arguments["x-queue-type"] = "quorum"
        return arguments

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
        self._declare(park_queue(queue_name), self.park_arguments(queue_name))
        events = bound_events(queue_name)
        if events is not None:
            self.declare_events_exchange()
            for event in events:
                self.channel.queue_bind(queue=queue_name, exchange=EVENTS_EXCHANGE, routing_key=event)
        return result

    def declare_events_exchange(self) -> None:
        """Declare ``edujobs.events`` (a durable topic exchange) and where it puts the events no
        handler queue is bound to: its alternate exchange, which routes them to ``events.unrouted``
        (kept until an operator looks; ``edujobs events`` and ``edujobs health`` count them)."""
        channel = self.channel
        channel.exchange_declare(exchange=UNROUTED_EXCHANGE, exchange_type="fanout", durable=True)
        self._declare(UNROUTED_QUEUE, {})
        channel.queue_bind(queue=UNROUTED_QUEUE, exchange=UNROUTED_EXCHANGE)
        channel.exchange_declare(
            exchange=EVENTS_EXCHANGE,
            exchange_type="topic",
            durable=True,
            arguments={"alternate-exchange": UNROUTED_EXCHANGE},
        )

    def park_arguments(self, queue_name: str) -> dict[str, Any]:
        """``Q.park``: a quorum queue whose messages go back to ``Q.DQ`` after one hop, *at least
        once*: RabbitMQ keeps each until ``Q.DQ`` confirmed it (retrying every few minutes while
        ``Q.DQ`` is missing or refusing), where a classic queue's dead-lettering would drop it.
        At-least-once dead-lettering needs ``reject-publish`` overflow (RabbitMQ 3.10+)."""
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": self.park_hop_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": delay_queue(queue_name),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declare(delay_queue(queue_name), self.queue_arguments(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self._declare(dead_letter_queue(queue_name), {"x-message-ttl": self.dead_letter_ttl_ms})

    def declare_topology(self, queues: tuple[str, ...]) -> None:
        """Declare the given domain queues (and their companions) on the server now, and delete the
        parking queues of earlier versions that are empty (``brokers.topology``); a handler's queue
        is bound to its events on ``edujobs.events``, declared with it."""
        self.declare_events_exchange()
        for queue in queues:
            self.declare_queue(queue, ensure=True)
            self._delete_legacy_wait(queue)

    def _delete_legacy_wait(self, queue_name: str) -> None:
        legacy = legacy_wait_queue(queue_name)
        try:
            # Deleting a queue that does not exist (the usual case) is a no-op for RabbitMQ.
            self.channel.queue_delete(queue=legacy, if_empty=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            del self.channel
            logger.info(
                "%s (parking queue of an earlier version) still holds messages: they move to %s within "
                "one hop; it is deleted at a later start once empty (%s).",
                legacy,
                delay_queue(queue_name),
                e.reply_text,
            )

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
        elif signal == "process_message":
            message = args[0]
            if isinstance(message, EdujobsMessage) and not message.consumer.start(message):
                # Its channel closed (a pause, a lost connection) after it was prefetched: RabbitMQ
                # has put it back, so it is not run here, by any hook or the actor.
                setattr(message, STALE, True)
                raise SkipMessage("the channel that delivered it is closed; RabbitMQ has it back")
        name = "before_" + signal
        for hook in self._hooks(name):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, _owner(hook), exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        if signal == "skip_message" and vars(args[0]).get(STALE) is True:
            return  # never started: nothing to close, count or record
        name = "after_" + signal
        for hook in reversed(self._hooks(name)):
            try:
                hook(self, *args, **kwargs)
            except Exception as e:
                self.logger.critical("Unexpected failure in %s of %r.", name, _owner(hook), exc_info=True)
                if signal == "process_message" and kwargs.get("exception") is not None:
                    _undecided(args[0], hook, e)

    # -- publishing -----------------------------------------------------------------------------

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Dramatiq's ``enqueue``, with what it leaves out: the AMQP ``timestamp`` (RabbitMQ's
        head_message_timestamp, the oldest-message-age metric, is read from it), the actor's
        priority for a message that names none, ``not_before`` on a new delayed message, backoff
        between attempts, and no publish at all for a copy of a message whose channel closed."""
        # A retry passes the received message itself (Dramatiq's Retries does): it is told once its
        # next life is published (``emit_after``).
        received = message if isinstance(message, EdujobsMessage) else None
        canonical_queue_name = message.queue_name
        queue_name = canonical_queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            due = current_millis() + delay
            extra = {"eta": due} if SIGNATURE_OPTION in message.options else {"eta": due, "not_before": due}
            message = message.copy(queue_name=queue_name, options=extra)
        origin = message.consumer if isinstance(message, EdujobsMessage) else vars(message).get(ORIGIN)
        if origin is not None and origin.closed:
            logger.info(
                "Not re-enqueueing message %s: the channel that delivered it is closed and RabbitMQ "
                "has put it back.",
                message.message_id,
            )
            return message
        self.declare_queue(canonical_queue_name, ensure=True)
        self.emit_before("enqueue", message, delay)
        body = message.encode()
        properties = _properties(self._priority(message))
        attempts = 0
        while True:
            try:
                self.channel.basic_publish(
                    exchange="",
                    routing_key=queue_name,
                    body=body,
                    properties=properties,
                    # Unroutable is only reported to a publisher in confirm mode.
                    mandatory=self.confirm_delivery,
                )
                break
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
                attempts = self._after_publish_error(e, queue_name, attempts)
                time.sleep(_backoff(attempts))
                self.declare_queue(canonical_queue_name, ensure=True)
        if received is not None:
            setattr(received, REENQUEUED, True)
        self.emit_after("enqueue", message, delay)
        return message

    def _priority(self, message: Message[Any]) -> int | None:
        priority = message.options.get("broker_priority")
        if priority is None:
            try:
                priority = self.get_actor(message.actor_name).options.get("broker_priority")
            except ActorNotFound:
                return None
        return priority if isinstance(priority, int) else None

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
                time.sleep(_backoff(attempts))

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
        # An expected permanent failure is part of normal operation (Dramatiq logs it at INFO).
        logger.log(
            logging.INFO if record["reason"] == "permanent_error" else logging.WARNING,
            "Dead-lettered a message from %s: %s (%s, fingerprint %s).",
            canonical(queue_name),
            record["reason"],
            record["exception_type"] or "no exception",
            record["fingerprint"],
        )


#: Set (True) on a received message once a next life of it (a retry, a delay) was published.
REENQUEUED = "edujobs_reenqueued"


def _undecided(message: MessageProxy, hook: Callable[..., None], error: Exception) -> None:
    """A hook deciding the fate of a failed message broke (a retry that could not be published, a
    middleware's bug): unless it was failed or re-enqueued already, it is dead-lettered with the
    reason, never acked as if done."""
    if message.failed or vars(message).get(REENQUEUED) is True:
        return
    owner = type(_owner(hook)).__name__
    mark_dead(
        message, "middleware_error", type(error).__name__, f"{owner} failed after the attempt failed: {error}"
    )


def _backoff(attempts: int) -> float:
    """Seconds before a publish's next attempt: 0.1, 0.2, 0.4... up to 2 (about 4 s in all)."""
    return float(min(0.1 * 2 ** (attempts - 1), 2.0))


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
