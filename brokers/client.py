"""The producer client: validate against ``contracts``, sign, publish Dramatiq's format with confirms.

Other services use ``send`` and ``send_many`` without importing any actor code::

    from brokers import client
    message_id = client.send("notifications.send_email", {"user_id": 7, "template": "welcome"})

``send`` waits for RabbitMQ's publisher confirm of its one message; ``send_many`` keeps a window of
unconfirmed messages in flight (``EDUJOBS_PUBLISH_CONFIRM_WINDOW``, 500) and returns once every one is
confirmed, which is an order of magnitude faster than confirming one at a time.

``publish_event("user.created", {"user_id": 7})`` publishes a domain event (``contracts.events``) to
the ``edujobs.events`` topic exchange, which hands it to every handler bound to it (README, "Events").
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import pika
import pika.exceptions

from brokers.topology import delay_queue
from contracts.errors import EdujobsError
from contracts.events import EVENT_ID_OPTION, EVENT_OPTION, EVENTS_EXCHANGE, OCCURRED_AT_OPTION, get_event
from contracts.priorities import broker_priority
from contracts.registry import ActorContract, get_contract
from contracts.signing import Keyring, sign_message

_ID_NAMESPACE = uuid.UUID("7f1d3c52-8a43-4c1e-9a53-5b0f2b7f9e10")


class PublishError(EdujobsError):
    """Raised when RabbitMQ did not confirm a message (nacked, returned as unroutable, or connection lost)."""


Delay = timedelta | float | int


def message_id_for(actor_name: str, idempotency_key: str | None) -> str:
    """A fresh id, or the same id every time for the same actor and idempotency key."""
    if idempotency_key is None:
        return random_uuid4()
    return str(uuid.uuid5(_ID_NAMESPACE, f"{actor_name}\x00{idempotency_key}"))


def random_uuid4() -> str:
    """``str(uuid.uuid4())`` at a quarter of the cost (it is a sizeable part of building a message)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def build_message(
    contract: ActorContract,
    payload: Mapping[str, Any],
    *,
    signing_key: bytes | Keyring,
    priority: str | None = None,
    delay: Delay | None = None,
    eta: datetime | None = None,
    idempotency_key: str | None = None,
    max_payload_bytes: int | None = None,
    extra_options: Mapping[str, Any] | None = None,
) -> tuple[str, str, bytes, int]:
    """Validate, sign and encode one message; return (message id, routing key, body, AMQP priority).
    ``extra_options`` adds message options for middleware (e.g. ``schedule``); it cannot replace
    the ones set here, and an option edujobs does not read is refused (``SignatureError``)."""
    kwargs = contract.validate(payload)
    name = priority or contract.priority
    amqp_priority = broker_priority(name)
    now_ms = int(time.time() * 1000)
    options: dict[str, Any] = {
        **(extra_options or {}),
        "broker_priority": amqp_priority,
        "priority_name": name,
    }
    routing_key = contract.queue
    due_ms = _due_ms(now_ms, delay, eta)
    if due_ms is not None and due_ms > now_ms:
        # eta drives Dramatiq's delay; not_before, signed with the envelope, keeps the message
        # delayed even if its delivery state were stripped on the way.
        options["eta"] = due_ms
        options["not_before"] = due_ms
        routing_key = delay_queue(contract.queue)
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    message_id = message_id_for(contract.actor_name, idempotency_key)
    fields = {
        "queue_name": routing_key,
        "actor_name": contract.actor_name,
        "args": [],
        "kwargs": kwargs,
        "options": options,
        "message_id": message_id,
        "message_timestamp": now_ms,
    }
    sign_message(signing_key, fields)
    body = orjson.dumps(fields)
    if max_payload_bytes is not None and len(body) > max_payload_bytes:
        raise ValueError(
            f"message for {contract.actor_name} is {len(body)} bytes, over the {max_payload_bytes}-byte "
            "limit (EDUJOBS_MAX_PAYLOAD_BYTES): send ids, not data"
        )
    return message_id, routing_key, body, amqp_priority


def _due_ms(now_ms: int, delay: Delay | None, eta: datetime | None) -> int | None:
    if delay is not None and eta is not None:
        raise ValueError("pass delay or eta, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("delay must not be negative")
        return now_ms + int(seconds * 1000)
    if eta is not None:
        if eta.tzinfo is None:
            raise ValueError(
                "eta must be time-zone aware (e.g. datetime(..., tzinfo=ZoneInfo('Europe/Paris')))"
            )
        return int(eta.timestamp() * 1000)
    return None


def build_event(
    name: str,
    payload: Mapping[str, Any],
    *,
    signing_key: bytes | Keyring,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    max_payload_bytes: int | None = None,
) -> tuple[str, bytes]:
    """Validate, sign and encode one event (``contracts.events``); return (event id, body).

    The message names the event as its actor and ``edujobs.events`` as its queue: a worker makes
    it each handler's own on receipt. It carries no priority: each handler has its own."""
    fields = _event_fields(name, get_event(name).validate(payload), event_id, occurred_at)
    sign_message(signing_key, fields)
    body = orjson.dumps(fields)
    if max_payload_bytes is not None and len(body) > max_payload_bytes:
        raise ValueError(
            f"event {name} is {len(body)} bytes, over the {max_payload_bytes}-byte limit "
            "(EDUJOBS_MAX_PAYLOAD_BYTES): send ids, not data"
        )
    return str(fields["message_id"]), body


def _event_fields(
    name: str, kwargs: dict[str, Any], event_id: str | None, occurred_at: datetime | None
) -> dict[str, Any]:
    if occurred_at is not None and occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be time-zone aware")
    now_ms = int(time.time() * 1000)
    event_id = event_id or random_uuid4()
    occurred_ms = now_ms if occurred_at is None else int(occurred_at.timestamp() * 1000)
    return {
        "queue_name": EVENTS_EXCHANGE,
        "actor_name": name,
        "args": [],
        "kwargs": kwargs,
        "options": {EVENT_OPTION: name, EVENT_ID_OPTION: event_id, OCCURRED_AT_OPTION: occurred_ms},
        "message_id": event_id,
        "message_timestamp": now_ms,
    }


class _ConfirmingChannel:
    """A channel in confirm mode that keeps a window of unconfirmed publishes in flight."""

    def __init__(self, parameters: Any, window: int, timeout: float) -> None:
        self.window = window
        self.timeout = timeout
        self.connection = pika.BlockingConnection(parameters)
        self.channel = self.connection.channel()
        self._impl = self.channel._impl
        self._next_tag = 1
        self._pending: set[int] = set()
        self._failed: list[int] = []
        self._returned: list[str] = []
        ready = threading.Event()
        self._impl.add_on_return_callback(self._on_return)
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _f: ready.set())
        self.channel._flush_output(ready.is_set)

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self._returned.append(str(properties.message_id))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        done = {t for t in self._pending if t <= tag} if multiple else {tag}
        self._pending -= done
        if isinstance(method, pika.spec.Basic.Nack):
            self._failed.extend(done)

    def publish(
        self, routing_key: str, body: bytes, priority: int, message_id: str, *, exchange: str = ""
    ) -> None:
        if len(self._pending) >= self.window:
            # pika's BlockingChannel has no public way to wait on confirms that its own
            # machinery did not request; _flush_output pumps I/O until the waiter is satisfied.
            # The deadline keeps a broker that stops confirming from hanging the producer.
            deadline = time.monotonic() + self.timeout
            self.channel._flush_output(
                lambda: len(self._pending) < self.window or time.monotonic() > deadline
            )
            if len(self._pending) >= self.window:
                self._give_up()
                raise PublishError(
                    f"RabbitMQ confirmed none of {self.window} messages in flight within {self.timeout}s"
                )
        self._impl.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            properties=pika.BasicProperties(
                delivery_mode=2,
                priority=priority,
                message_id=message_id,
                # Seconds, as AMQP has it: RabbitMQ's head_message_timestamp (the oldest-message
                # age metric) is read from it.
                timestamp=int(time.time()),
            ),
            mandatory=True,
        )
        self._pending.add(self._next_tag)
        self._next_tag += 1

    def wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        self.channel._flush_output(lambda: not self._pending or time.monotonic() > deadline)
        if self._pending:
            count = len(self._pending)
            self._give_up()
            raise PublishError(f"{count} messages not confirmed by RabbitMQ within {self.timeout}s")
        failed, returned = self._failed, self._returned
        self._failed, self._returned = [], []
        if returned:
            raise PublishError(f"RabbitMQ could not route {len(returned)} messages (is the queue declared?)")
        if failed:
            raise PublishError(f"RabbitMQ refused {len(failed)} messages (nack)")

    def _give_up(self) -> None:
        # Confirms that arrive late would be counted against the next batch: start afresh.
        self._pending.clear()
        with contextlib.suppress(Exception):  # the connection may be the thing that broke
            self.close()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class Client:
    """A producer bound to one RabbitMQ URL and signing key; thread-safe (a connection per thread)."""

    def __init__(
        self,
        url: str,
        *,
        signing_key: bytes | Keyring,
        confirm_window: int = 500,
        max_payload_bytes: int | None = None,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.parameters = [pika.URLParameters(u) for u in url.split(";")]
        for parameters in self.parameters:
            # A broker under memory or disk alarm blocks publishers without a word: give up
            # (PublishError) after the confirm timeout instead of hanging the sending service.
            if parameters.blocked_connection_timeout is None:
                parameters.blocked_connection_timeout = confirm_timeout
        self.signing_key = Keyring.of(signing_key)
        self.confirm_window = confirm_window
        self.confirm_timeout = confirm_timeout
        self.max_payload_bytes = max_payload_bytes
        self._local = threading.local()
        self._declared: set[str] = set()
        self._channels: list[_ConfirmingChannel] = []

    def _channel(self) -> _ConfirmingChannel:
        channel: _ConfirmingChannel | None = getattr(self._local, "channel", None)
        if channel is None or not channel.connection.is_open:
            channel = _ConfirmingChannel(self.parameters, self.confirm_window, self.confirm_timeout)
            self._local.channel = channel
            self._channels.append(channel)
        return channel

    def _ensure_queue(self, channel: _ConfirmingChannel, contract: ActorContract) -> None:
        # Queues are declared by workers (brokers.setup); a producer only checks that they exist,
        # so that a message is never published into the void. A 404 here means no worker has
        # ever declared the topology: say how to fix it.
        if contract.queue in self._declared:
            return
        probe = channel.connection.channel()
        try:
            for name in (contract.queue, delay_queue(contract.queue)):
                probe.queue_declare(queue=name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            raise PublishError(
                f"queue {contract.queue!r} does not exist in RabbitMQ ({e.reply_text}): run "
                "`edujobs queues declare` or start a worker once to declare the topology"
            ) from None
        else:
            probe.close()
        self._declared.add(contract.queue)

    def _ensure_exchange(self, channel: _ConfirmingChannel) -> None:
        # As for queues: the worker declares the exchange, its handler queues and bindings.
        if EVENTS_EXCHANGE in self._declared:
            return
        probe = channel.connection.channel()
        try:
            probe.exchange_declare(exchange=EVENTS_EXCHANGE, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            raise PublishError(
                f"exchange {EVENTS_EXCHANGE!r} does not exist in RabbitMQ ({e.reply_text}): run "
                "`edujobs queues declare` or start a worker once to declare the topology"
            ) from None
        else:
            probe.close()
        self._declared.add(EVENTS_EXCHANGE)

    def publish_event(
        self,
        name: str,
        payload: Mapping[str, Any],
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Validate, sign and publish one event to ``edujobs.events``; return its id once RabbitMQ
        has confirmed it. An event no handler queue is bound to is kept in ``events.unrouted``.
        Publishing the same ``event_id`` twice runs each handler's side effects once."""
        event_id, body = build_event(
            name,
            payload,
            signing_key=self.signing_key,
            event_id=event_id,
            occurred_at=occurred_at,
            max_payload_bytes=self.max_payload_bytes,
        )

        def publish(channel: _ConfirmingChannel) -> None:
            self._ensure_exchange(channel)
            channel.publish(name, body, 0, event_id, exchange=EVENTS_EXCHANGE)

        self._publish(publish)
        return event_id

    def _publish(self, publish: Callable[[_ConfirmingChannel], object]) -> None:
        """Run ``publish`` on this thread's channel and wait for its confirms, reconnecting on a
        lost connection (a republish may duplicate, never lose; ids stay the same)."""
        attempts = 0
        while True:
            try:
                # Connecting is inside the try: RabbitMQ being down is a PublishError, not pika's.
                channel = self._channel()
                publish(channel)
                channel.wait()
                return
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
                self._local.channel = None
                attempts += 1
                if attempts >= 3:
                    where = ", ".join(f"{p.host}:{p.port}" for p in self.parameters)
                    raise PublishError(
                        f"could not publish to RabbitMQ at {where} ({type(e).__name__}: {e}); "
                        "is it running, and is EDUJOBS_RABBITMQ_URL right?"
                    ) from None
                time.sleep(0.2 * attempts)

    def send(
        self,
        actor_name: str,
        payload: Mapping[str, Any],
        *,
        priority: str | None = None,
        delay: Delay | None = None,
        eta: datetime | None = None,
        idempotency_key: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Validate, sign and publish one message; return its id once RabbitMQ has confirmed it."""
        keys = None if idempotency_key is None else [idempotency_key]
        return self.send_many(
            actor_name,
            [payload],
            priority=priority,
            delay=delay,
            eta=eta,
            idempotency_keys=keys,
            options=options,
        )[0]

    def send_many(
        self,
        actor_name: str,
        payloads: Iterable[Mapping[str, Any]],
        *,
        priority: str | None = None,
        delay: Delay | None = None,
        eta: datetime | None = None,
        idempotency_keys: Sequence[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Validate every payload first (nothing is published if one is invalid), then publish them
        all with pipelined confirms; return their ids in order once every one is confirmed.
        ``options`` are extra message options for worker middleware (``schedule``: see Metrics)."""
        contract = get_contract(actor_name)
        items = list(payloads)
        if idempotency_keys is not None and len(idempotency_keys) != len(items):
            raise ValueError("idempotency_keys must have one key per payload")
        built = []
        for index, payload in enumerate(items):
            key = idempotency_keys[index] if idempotency_keys is not None else None
            try:
                built.append(
                    build_message(
                        contract,
                        payload,
                        signing_key=self.signing_key,
                        priority=priority,
                        delay=delay,
                        eta=eta,
                        idempotency_key=key,
                        max_payload_bytes=self.max_payload_bytes,
                        extra_options=options,
                    )
                )
            except EdujobsError as e:
                if len(items) > 1:
                    raise type(e)(f"payload #{index}: {e}") from None
                raise

        def publish(channel: _ConfirmingChannel) -> None:
            self._ensure_queue(channel, contract)
            for message_id, routing_key, body, amqp_priority in built:
                channel.publish(routing_key, body, amqp_priority, message_id)

        # Republishing everything after a lost connection may duplicate messages, never lose
        # them: the ids stay the same, so the ledger dedupes side effects.
        self._publish(publish)
        return [item[0] for item in built]

    def close(self) -> None:
        for channel in self._channels:
            with contextlib.suppress(Exception):  # closing is best effort
                channel.close()
        self._channels.clear()
        self._local = threading.local()


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process's client, configured from settings."""
    global _default
    with _default_lock:
        if _default is None:
            from brokers.settings import get_settings

            settings = get_settings()
            _default = Client(
                settings.rabbitmq_url,
                signing_key=settings.keyring(),
                confirm_window=settings.publish_confirm_window,
                max_payload_bytes=settings.max_payload_bytes,
            )
        return _default


def send(
    actor_name: str,
    payload: Mapping[str, Any],
    *,
    priority: str | None = None,
    delay: Delay | None = None,
    eta: datetime | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Send one message with the default client (see ``Client.send``)."""
    return default_client().send(
        actor_name, payload, priority=priority, delay=delay, eta=eta, idempotency_key=idempotency_key
    )


def send_many(
    actor_name: str,
    payloads: Iterable[Mapping[str, Any]],
    *,
    priority: str | None = None,
    delay: Delay | None = None,
    eta: datetime | None = None,
    idempotency_keys: Sequence[str] | None = None,
) -> list[str]:
    """Send many messages with the default client (see ``Client.send_many``)."""
    return default_client().send_many(
        actor_name, payloads, priority=priority, delay=delay, eta=eta, idempotency_keys=idempotency_keys
    )


def publish_event(
    name: str,
    payload: Mapping[str, Any],
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> str:
    """Publish one event with the default client (see ``Client.publish_event``)."""
    return default_client().publish_event(name, payload, event_id=event_id, occurred_at=occurred_at)
