"""The edujobs RabbitMQ broker: Dramatiq's broker with the topology and dead-lettering we need.

Differences from ``dramatiq.brokers.rabbitmq.RabbitmqBroker``:

- every work queue and delay queue is declared with ``x-max-priority``; ``Q.XQ`` keeps dead letters
  for the configured retention instead of the value Dramatiq reads from the environment at import;
- a declaration that disagrees with an existing queue (406 PRECONDITION_FAILED) raises
  ``TopologyError`` saying what differs and how to migrate, instead of a consumer restart loop;
- dead-lettering republishes the message to ``Q.XQ`` with its record (why, when, how often, where)
  and a publisher confirm *before* acking the original, instead of a bare nack that loses the why;
- a body that cannot be decoded is dead-lettered byte for byte with its reason;
- acks are batched: a worker thread queues its message's tag, and the consumer thread, woken once
  for however many tags are queued by then, sends them all in one write (Dramatiq wakes it and
  flushes the socket once per ack, the most expensive part of its consumer thread);
- a delayed message due later than ``PARK_THRESHOLD_MS`` is parked in ``Q.wait`` (durable, TTL,
  dead-lettering back to ``Q.DQ``) instead of being held unacked in worker memory, which RabbitMQ's
  ``consumer_timeout`` would otherwise requeue (Dramatiq issue #827).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pika
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import (
    MAX_ENQUEUE_ATTEMPTS,
    RabbitmqBroker,
    _RabbitmqConsumer,
    _RabbitmqMessage,
)
from dramatiq.common import current_millis, dq_name
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import ActorNotFound, ConnectionClosed, DecodeError
from dramatiq.message import Message, get_encoder
from dramatiq.middleware import Middleware, MiddlewareError

from brokers import dlq
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


class EdujobsMessage(_RabbitmqMessage):
    """Dramatiq's RabbitMQ message proxy with the message's fields as attributes of its own.

    ``MessageProxy`` forwards every field read (``message.options``, ``message.actor_name``) through
    ``__getattr__``, a Python call each: some twenty per message across the middleware stack. The
    fields of a ``Message`` never change (it is frozen; ``options`` is a dict that changes in
    place), so they are copied once here and read directly."""

    def __init__(self, redelivered: bool, tag: int, message: Message[Any]) -> None:
        super().__init__(redelivered, tag, message)
        self.queue_name = message.queue_name
        self.actor_name = message.actor_name
        self.args = message.args
        self.kwargs = message.kwargs
        self.options = message.options
        self.message_id = message.message_id
        self.message_timestamp = message.message_timestamp


class EdujobsConsumer(_RabbitmqConsumer):
    """A consumer that dead-letters with a record, keeps undecodable bodies, parks long delays and
    batches its acks."""

    broker: EdujobsBroker

    def __init__(self, broker: EdujobsBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        # Tags whose messages are done, waiting for the consumer thread (which owns the channel)
        # to ack them; ``_acks_scheduled`` says a flush is already on its way.
        self._acks_lock = threading.Lock()
        self._pending_acks: list[int] = []
        self._acks_scheduled = False

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, _RabbitmqMessage)
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            logger.warning("Failed to ack message %s: not in known tags.", message.message_id)
            return
        self._schedule_ack(message._tag)

    def _schedule_ack(self, tag: int) -> None:
        """Queue ``tag`` for the consumer thread to ack (any thread). One wake-up of the consumer
        thread serves every tag queued before it runs, instead of one wake-up and one socket
        write per ack."""
        with self._acks_lock:
            self._pending_acks.append(tag)
            if self._acks_scheduled:
                return
            self._acks_scheduled = True
        try:
            self.connection.add_callback_threadsafe(self._flush_acks)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            # The connection is gone, and with it these deliveries: RabbitMQ puts them back.
            with self._acks_lock:
                self._pending_acks.clear()
                self._acks_scheduled = False
            raise ConnectionClosed(e) from None

    def _flush_acks(self) -> None:
        # Runs on the consumer thread. The flag is cleared before the tags are taken, so a tag
        # queued after this point schedules a flush of its own.
        with self._acks_lock:
            tags, self._pending_acks = self._pending_acks, []
            self._acks_scheduled = False
        if not tags:
            return
        # The channel's own basic_ack writes its frame and then runs the I/O loop until the
        # socket has taken it; the frames of all but the last tag are only written, and the
        # last one's flush sends them together.
        channel = self.channel
        for tag in tags[:-1]:
            channel._impl.basic_ack(delivery_tag=tag)
        channel.basic_ack(tags[-1])

    def __next__(self) -> _RabbitmqMessage | None:
        if self.broker.paused_queues and canonical(self.queue_name) in self.broker.paused_queues:
            # Paused: its ConsumerThread, paused too, closes this consumer on a None, and RabbitMQ
            # puts the messages it had prefetched back, ready. The sleep keeps the loop from spinning.
            time.sleep(0.05)
            return None
        try:
            method, properties, body = next(self.iterator)
            if method is None:
                return None
        except (AssertionError, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            if getattr(e, "reply_code", None) == 404:
                self.broker.queues_pending.add(canonical(self.queue_name))
            raise ConnectionClosed(e) from None

        limit = self.broker.max_message_bytes
        if limit is not None and len(body) > limit:
            error = f"the message is {len(body)} bytes, over the {limit}-byte limit"
            self._dead_letter_raw(method.delivery_tag, body, properties, "payload_too_large", error)
            return None
        try:
            message = decode_message(body)
        except DecodeError as e:
            cause = e.__cause__ or e
            error = f"the body is not a Dramatiq message ({len(body)} bytes): {cause}"
            self._dead_letter_raw(method.delivery_tag, body, properties, "undecodable", error, cause)
            return None

        eta = message.options.get("eta")
        if (
            self.queue_name.endswith(".DQ")
            and isinstance(eta, int | float)
            and eta - time.time() * 1000 > self.broker.park_threshold_ms
        ):
            self._park(method.delivery_tag, body, properties)
            return None

        self.known_tags.add(method.delivery_tag)
        return EdujobsMessage(method.redelivered, method.delivery_tag, message)

    def _ack_now(self, tag: int) -> None:
        # Runs on the consumer thread, which owns the channel.
        self.channel.basic_ack(tag)

    def _dead_letter_raw(
        self,
        tag: int,
        body: bytes,
        properties: Any,
        reason: str,
        error: str,
        cause: BaseException | None = None,
    ) -> None:
        # The body is kept byte for byte; only the headers say why.
        record = dlq.build_record(
            reason=reason,
            actor_name="",
            worker=self.broker.worker_name,
            exception_type=type(cause).__name__ if cause else "PayloadTooLargeError",
            error=error,
        )
        self.broker.dead_letter(self.queue_name, body, record, getattr(properties, "priority", None))
        self._ack_now(tag)

    def _park(self, tag: int, body: bytes, properties: Any) -> None:
        self.broker.publish_confirmed(
            wait_queue(self.queue_name), body, priority=getattr(properties, "priority", None)
        )
        self._ack_now(tag)

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter ``message`` with its record (confirmed), then ack the original."""
        assert isinstance(message, _RabbitmqMessage)
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            logger.warning("Failed to dead-letter message %s: not in known tags.", message.message_id)
            return
        try:
            record = message.options.get("dead_letter") or _record_from_exception(
                message, self.broker.worker_name
            )
            message.options["dead_letter"] = record
            body = message._message.encode()
            self.broker.dead_letter(
                self.queue_name, body, record, message.options.get("broker_priority"), message._message
            )
        except (ConnectionClosed, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            # The dead letter did not arrive: the original stays unacked and known, so that
            # Dramatiq's post-processing retries this nack (or, once the consumer reconnected,
            # RabbitMQ redelivers the original). Acking it now would lose the message.
            self.known_tags.add(message._tag)
            raise e if isinstance(e, ConnectionClosed) else ConnectionClosed(e) from None
        # If the connection is gone by now, the dead letter is safe and the original comes back
        # on another connection and is dead-lettered again (a duplicate in .XQ, never a loss).
        self._schedule_ack(message._tag)


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


def decode_message(body: bytes) -> Message[Any]:
    """Decode ``body`` like ``Message.decode``, and refuse (``DecodeError``) a message whose fields
    have the wrong type (``dlq.shape_problem``); the error's cause says which field."""
    encoder = get_encoder()
    try:
        fields = _fast_decode(body) if type(encoder) is JSONEncoder else encoder.decode(body)
    except Exception as e:
        raise DecodeError("Failed to decode message.", body, e) from e
    problem = dlq.shape_problem(fields)
    if problem is not None:
        cause = TypeError(problem)
        raise DecodeError("Failed to decode message.", body, cause) from cause
    return Message(**{**fields, "args": tuple(fields["args"])})


def _fast_decode(body: bytes) -> Any:
    # orjson reads a message in a third of the time json does; anything it refuses (NaN, integers
    # past 64 bits) is read by Dramatiq's JSONEncoder, as before.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return JSONEncoder().decode(body)


def _record_from_exception(message: _RabbitmqMessage, worker: str) -> dict[str, Any]:
    exception = getattr(message, "_exception", None)
    reason = message.options.pop("dead_letter_reason", None)
    if reason is None:
        if isinstance(exception, ActorNotFound):
            reason = "unknown_actor"
        elif message.options.get("retries"):
            reason = "retries_exhausted"
        else:
            reason = "failed"
    exception_type = message.options.pop("dead_letter_exception", None)
    return dlq.build_record(
        reason=reason,
        actor_name=message.actor_name,
        worker=worker,
        exception_type=exception_type or (type(exception).__name__ if exception else ""),
        error=str(exception) if exception else "",
        traceback=message.options.get("traceback", ""),
        # Retries counts the failures it retried or exhausted; a permanent failure is one more.
        attempts=int(message.options.get("retries", 0) or 0) + (1 if reason != "retries_exhausted" else 0),
        first_failure_ms=message.options.get("first_failure_at"),
    )
