"""The edujobs RabbitMQ consumer: what ``EdujobsBroker`` (``brokers.rabbitmq``) reads messages with.

Differences from Dramatiq's ``_RabbitmqConsumer``:

- every message is checked as it is received, before any delay, park, eta or retry handling: a
  body that cannot be decoded, is over the size limit, names another queue, carries an option
  edujobs does not read (or of the wrong type), or whose signature is missing or wrong is
  dead-lettered byte for byte with its reason, and never reaches the worker's threads;
- an event (``contracts.events``) received on a handler's queue is checked the same way, then
  becomes that handler's message: its actor, and a message id of its own (one event, one job per
  handler); an event on a queue whose handler is not bound to it is dead-lettered (``wrong_queue``);
- a message belongs to the channel that delivered it: its ack or nack is applied on that channel
  only. AMQP delivery tags restart at 1 on every channel, so a late ack from a channel that closed
  (connection lost, queue paused) would otherwise ack whatever the new channel delivered under the
  same number; such a late ack is dropped (RabbitMQ has put the message back already);
- closing (a pause, a lost connection, shutdown) lets the messages already running finish and be
  acked on this channel first; those not yet started are not run: they go back to RabbitMQ with the
  channel, and a copy that Dramatiq would re-enqueue from its in-memory delay queue is not published;
- a failed message is dead-lettered with its record (why, when, how often, where), confirmed,
  *before* the original is acked, instead of a bare nack that loses the why; the record is always
  built here, from what the worker saw, never read from the message;
- acks are batched: a worker thread queues its message's tag, and the consumer thread, woken once
  for however many tags are queued by then, sends them all in one write;
- a message due later than the broker's park threshold, from any queue, is parked in ``Q.park``
  (a quorum queue whose TTL dead-letters at least once back to ``Q.DQ``) instead of being held
  unacked in worker memory, which RabbitMQ's ``consumer_timeout`` would otherwise requeue (#827);
- while its queue is paused by an operator it takes nothing;
- the message proxy carries the message's fields as attributes, and prints as ``actor(id)``, without
  its arguments, wherever Dramatiq logs it.
"""

from __future__ import annotations

import contextlib
import functools
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
from brokers.topology import canonical, delay_queue, park_queue
from contracts.events import EVENTS_EXCHANGE, bound_events, event_envelope, handler_fields
from middleware.fate import ORIGIN, death_of, requeued, traceback_of
from middleware.signatures import VERIFIED, refusal

if TYPE_CHECKING:
    from brokers.rabbitmq import EdujobsBroker

logger = logging.getLogger(__name__)

_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)

#: How long closing a consumer (a pause, shutdown) waits for its running messages to finish and be
#: acked on its channel; past it the channel closes and RabbitMQ delivers them again.
CLOSE_WAIT_SECONDS = 600


class EdujobsMessage(_RabbitmqMessage):
    """Dramatiq's RabbitMQ message proxy, bound to the consumer (channel) that delivered it.

    ``MessageProxy`` forwards every field read through ``__getattr__``, a Python call each: the
    fields of a ``Message`` never change (it is frozen; ``options`` is a dict that changes in place),
    so they are copied once here and read directly."""

    def __init__(self, redelivered: bool, tag: int, message: Message[Any], consumer: EdujobsConsumer) -> None:
        super().__init__(redelivered, tag, message)
        self.queue_name = message.queue_name
        self.actor_name = message.actor_name
        self.args = message.args
        self.kwargs = message.kwargs
        self.options = message.options
        self.message_id = message.message_id
        self.message_timestamp = message.message_timestamp
        self.consumer = consumer
        setattr(self, VERIFIED, True)

    def copy(self, **attributes: Any) -> Message[Any]:
        """The message, copied, remembering where its original came from (``middleware.fate.ORIGIN``)."""
        copied = self._message.copy(**attributes)
        object.__setattr__(copied, ORIGIN, self.consumer)
        return copied

    def __str__(self) -> str:
        # Dramatiq logs messages with %s, which would print their arguments (personal data).
        return f"{self.actor_name}({self.message_id})"

    __repr__ = __str__


class EdujobsConsumer(_RabbitmqConsumer):
    """A consumer that checks what it receives, binds acks to its channel, dead-letters with a
    record, keeps undecodable bodies, parks long delays and batches its acks."""

    broker: EdujobsBroker

    def __init__(self, broker: EdujobsBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        #: Set once the consumer closes: a message it delivered and no worker started yet will not run.
        self.closed = False
        # Tags of messages a worker thread started and has not finished; closing waits for them.
        self._state_lock = threading.Lock()
        self._started: set[int] = set()
        # Tags whose messages are done, waiting for the consumer thread (which owns the channel)
        # to ack them; ``_acks_scheduled`` says a flush is already on its way.
        self._acks_lock = threading.Lock()
        self._pending_acks: list[int] = []
        self._acks_scheduled = False
        # The queue names a message may carry here: a message moves between Q and Q.DQ (a delay, a
        # park) keeping either name.
        self._own_names = frozenset({canonical(queue_name), delay_queue(queue_name)})

    # -- receiving --------------------------------------------------------------------------------

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
        except (AssertionError, *_AMQP_ERRORS) as e:
            if getattr(e, "reply_code", None) == 404:
                self.broker.queues_pending.add(canonical(self.queue_name))
            raise ConnectionClosed(e) from None
        tag = method.delivery_tag

        limit = self.broker.max_message_bytes
        if limit is not None and len(body) > limit:
            error = f"the message is {len(body)} bytes, over the {limit}-byte limit"
            self._dead_letter_raw(tag, body, properties, "payload_too_large", "PayloadTooLargeError", error)
            return None
        try:
            fields = decode_fields(body)
        except DecodeError as e:
            cause = e.__cause__ or e
            error = f"the body is not a Dramatiq message ({len(body)} bytes): {cause}"
            self._dead_letter_raw(tag, body, properties, "undecodable", type(cause).__name__, error)
            return None
        event = event_envelope(fields["options"])
        problem: str | None = None
        if event is not None:
            problem = self._event_problem(fields, event[0])
        elif fields["queue_name"] not in self._own_names:
            problem = (
                f"the message names queue {fields['queue_name']!r} but was published to {self.queue_name!r}"
            )
        if problem is not None:
            self._dead_letter_raw(tag, body, properties, "wrong_queue", "QueueMismatchError", problem, fields)
            return None
        found = refusal(self.broker.keyring, fields)
        if found is not None:
            reason, error = found
            exception_type = "SignatureError" if reason == "bad_signature" else "OptionError"
            self._dead_letter_raw(tag, body, properties, reason, exception_type, error, fields)
            return None
        if event is not None:
            # Verified as published: now it is this handler's own message (its signature holds).
            handler_fields(fields, canonical(self.queue_name))

        options = fields["options"]
        now_ms = time.time() * 1000
        not_before = options.get("not_before")
        if not_before is not None and not_before > now_ms and not_before > (options.get("eta") or 0):
            options["eta"] = not_before  # its sender delayed it: keep it delayed whatever its state says
        eta = options.get("eta")
        if eta is not None and eta - now_ms > self.broker.park_threshold_ms:
            self._park(tag, body, properties)
            return None

        # The worker looks the message's consumer up by its queue name: it is this one's.
        fields["queue_name"] = self.queue_name
        message: Message[Any] = Message(**fields)
        self.known_tags.add(tag)
        return EdujobsMessage(method.redelivered, tag, message, self)

    def _event_problem(self, fields: dict[str, Any], event: str) -> str | None:
        """Why an event must not run from this queue (not a handler's bound to it; an envelope
        that is neither as published nor this handler's), or None."""
        handler = canonical(self.queue_name)
        if event not in (bound_events(handler) or ()):
            return f"event {event!r} reached queue {self.queue_name!r}, whose handler is not bound to it"
        if fields["queue_name"] not in self._own_names and fields["queue_name"] != EVENTS_EXCHANGE:
            return f"the event names queue {fields['queue_name']!r} but was published to {self.queue_name!r}"
        if fields["actor_name"] not in (event, handler):
            return f"the event names actor {fields['actor_name']!r}, not {event!r} or its handler {handler!r}"
        return None

    def _dead_letter_raw(
        self,
        tag: int,
        body: bytes,
        properties: Any,
        reason: str,
        exception_type: str,
        error: str,
        fields: dict[str, Any] | None = None,
    ) -> None:
        # The body is kept byte for byte; the headers (and ``dlq`` tools) say why.
        actor_name = fields.get("actor_name") if fields else None
        record = dlq.build_record(
            reason=reason,
            actor_name=actor_name if isinstance(actor_name, str) else "",
            worker=self.broker.worker_name,
            exception_type=exception_type,
            error=error,
        )
        # A decoded message goes along (not as it would run: for reporting, e.g. Sentry's grouping
        # by actor); the body, not this object, is what is dead-lettered.
        message: Message[Any] | None = Message(**fields) if fields else None
        self.broker.dead_letter(self.queue_name, body, record, _amqp_priority(properties), message)
        self._ack_now(tag)

    def _park(self, tag: int, body: bytes, properties: Any) -> None:
        self.broker.publish_confirmed(park_queue(self.queue_name), body, priority=_amqp_priority(properties))
        self._ack_now(tag)

    def _ack_now(self, tag: int) -> None:
        # Runs on the consumer thread, which owns the channel.
        self.channel.basic_ack(tag)

    # -- running ----------------------------------------------------------------------------------

    def start(self, message: EdujobsMessage) -> bool:
        """Called by a worker thread before it runs ``message``: False when this consumer closed
        since it delivered it (the message is not run; RabbitMQ has it back)."""
        with self._state_lock:
            if self.closed:
                return False
            self._started.add(message._tag)
            return True

    def _finish(self, tag: int) -> None:
        with self._state_lock:
            self._started.discard(tag)

    def close(self) -> None:
        with self._state_lock:
            self.closed = True
        try:
            # No more deliveries (pika hands back those it buffered), then let the running messages
            # finish and be acked on this channel before it closes, pumping its I/O (heartbeats,
            # the acks' callbacks) meanwhile.
            if self.channel.is_open:
                self.channel.cancel()
            deadline = time.monotonic() + CLOSE_WAIT_SECONDS
            while self._started and self.connection.is_open and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.2)
            if self._started:
                logger.warning(
                    "Closing the consumer of %s with %d messages still running after %d s: RabbitMQ "
                    "will deliver them again.",
                    self.queue_name,
                    len(self._started),
                    CLOSE_WAIT_SECONDS,
                )
        except (AssertionError, *_AMQP_ERRORS):
            pass  # the connection is gone, and with it every unacked message: RabbitMQ has them back
        super().close()

    # -- acking -------------------------------------------------------------------------------------

    def ack(self, message: MessageProxy) -> None:
        if not self._take(message, "ack"):
            return
        assert isinstance(message, EdujobsMessage)
        try:
            if requeued(message):
                self._requeue(message._tag)
            else:
                self._schedule_ack(message._tag)
        finally:
            self._finish(message._tag)

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter ``message`` with its record (confirmed), then ack the original."""
        if not self._take(message, "dead-letter"):
            return
        assert isinstance(message, EdujobsMessage)
        try:
            record = _record(message, self.broker.worker_name)
            message.options["dead_letter"] = record
            self.broker.dead_letter(
                self.queue_name,
                message._message.encode(),
                record,
                message.options.get("broker_priority"),
                message._message,
            )
        except (ConnectionClosed, *_AMQP_ERRORS) as e:
            # The dead letter did not arrive: the original stays unacked and known, so that
            # Dramatiq's post-processing retries this nack (or, once the consumer reconnected,
            # RabbitMQ redelivers the original). Acking it now would lose the message.
            self.known_tags.add(message._tag)
            raise e if isinstance(e, ConnectionClosed) else ConnectionClosed(e) from None
        # If the connection is gone by now, the dead letter is safe and the original comes back
        # on another connection and is dead-lettered again (a duplicate in .XQ, never a loss).
        self._schedule_ack(message._tag)
        self._finish(message._tag)

    def _take(self, message: MessageProxy, action: str) -> bool:
        """Take ``message``'s delivery tag out of the unacked ones: False (and nothing is sent) when
        it is not this channel's to settle — delivered on a channel since closed, or not started."""
        if not isinstance(message, EdujobsMessage) or message.consumer is not self:
            if isinstance(message, EdujobsMessage):
                message.consumer._finish(message._tag)
            logger.info(
                "Not sending the %s of message %s: the channel that delivered it is closed, and "
                "RabbitMQ has put the message back.",
                action,
                message.message_id,
            )
            return False
        if vars(message).get(STALE) is True:
            return False  # never started: it goes back to RabbitMQ with this closing channel
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
        except _AMQP_ERRORS as e:
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

    def _requeue(self, tag: int) -> None:
        # If the connection is gone, RabbitMQ puts the message back by itself.
        with contextlib.suppress(*_AMQP_ERRORS):
            self.connection.add_callback_threadsafe(
                functools.partial(self.channel.basic_nack, tag, requeue=True)
            )


#: Set (True) on a message proxy that a worker thread was about to run after its consumer closed.
STALE = "edujobs_stale"


def decode_fields(body: bytes) -> dict[str, Any]:
    """Decode ``body`` like ``Message.decode`` into a message's fields, and refuse (``DecodeError``)
    a message whose fields have the wrong type (``dlq.shape_problem``); the error's cause says
    which field. ``args`` come back as a tuple."""
    encoder = get_encoder()
    try:
        fields = _fast_decode(body) if type(encoder) is JSONEncoder else encoder.decode(body)
    except Exception as e:
        raise DecodeError("Failed to decode message.", body, e) from e
    problem = dlq.shape_problem(fields)
    if problem is not None:
        cause = TypeError(problem)
        raise DecodeError("Failed to decode message.", body, cause) from cause
    fields["args"] = tuple(fields["args"])
    return fields


def decode_message(body: bytes) -> Message[Any]:
    """``decode_fields`` as a ``Message``."""
    return Message(**decode_fields(body))


def _fast_decode(body: bytes) -> Any:
    # orjson reads a message in a third of the time json does; anything it refuses (NaN, integers
    # past 64 bits) is read by Dramatiq's JSONEncoder, as before.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return JSONEncoder().decode(body)


def _amqp_priority(properties: Any) -> int | None:
    priority = getattr(properties, "priority", None)
    return priority if isinstance(priority, int) else None


def _record(message: EdujobsMessage, worker: str) -> dict[str, Any]:
    """The dead letter's record, from what this worker saw: the fate a middleware decided
    (``middleware.fate``), else the attempt's exception."""
    exception = getattr(message, "_exception", None)
    death = death_of(message)
    retries = message.options.get("retries", 0)
    if death is not None:
        reason = death.reason
    elif isinstance(exception, ActorNotFound):
        reason = "unknown_actor"
    else:
        reason = "retries_exhausted" if retries else "failed"
    exception_type = (death.exception_type if death else None) or (
        type(exception).__name__ if exception else ""
    )
    error = (death.error if death else None) or (str(exception) if exception else "")
    return dlq.build_record(
        reason=reason,
        actor_name=message.actor_name,
        worker=worker,
        exception_type=exception_type,
        error=error,
        traceback=traceback_of(message),
        # Retries counts the failures it retried or exhausted; any other death is one more.
        attempts=retries + (1 if reason != "retries_exhausted" else 0),
        first_failure_ms=message.options.get("first_failure_at"),
    )
