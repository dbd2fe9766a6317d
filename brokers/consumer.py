"""The edujobs RabbitMQ consumer: what ``EdujobsBroker`` (``brokers.rabbitmq``) reads messages with.

Differences from Dramatiq's ``_RabbitmqConsumer``:

- a body that cannot be decoded, or is over the size limit, is dead-lettered byte for byte with its
  reason (a field of the wrong type counts as undecodable, ``dlq.shape_problem``);
- a failed message is dead-lettered with its record (why, when, how often, where), confirmed,
  *before* the original is acked, instead of a bare nack that loses the why;
- acks are batched: a worker thread queues its message's tag, and the consumer thread, woken once
  for however many tags are queued by then, sends them all in one write (Dramatiq wakes it and
  flushes the socket once per ack, the most expensive part of its consumer thread);
- a delayed message due later than the broker's park threshold is parked in ``Q.wait`` (durable,
  TTL, dead-lettering back to ``Q.DQ``) instead of being held unacked in worker memory, which
  RabbitMQ's ``consumer_timeout`` would otherwise requeue (Dramatiq issue #827);
- while its queue is paused by an operator it takes nothing;
- the message proxy carries the message's fields as attributes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson
import pika
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import ActorNotFound, ConnectionClosed, DecodeError
from dramatiq.message import Message, get_encoder

from brokers import dlq
from brokers.topology import canonical, wait_queue

if TYPE_CHECKING:
    from brokers.rabbitmq import EdujobsBroker

logger = logging.getLogger(__name__)


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
        if self._forget(message, "ack"):
            self._schedule_ack(message._tag)

    def _forget(self, message: MessageProxy, action: str) -> bool:
        """Take ``message``'s delivery tag out of the known ones; False (logged) if it was not
        there (delivered on an earlier connection: RabbitMQ has put it back already)."""
        assert isinstance(message, _RabbitmqMessage)
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            logger.warning("Failed to %s message %s: not in known tags.", action, message.message_id)
            return False
        return True

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
        if not self._forget(message, "dead-letter"):
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
