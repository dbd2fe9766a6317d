"""Comparison (b): enqueue rate with publisher confirms.

Five contenders publish persistent messages of the same size (Dramatiq's format for
``notifications.send_email``, with edujobs' options) to a durable ``notifications`` queue with
``x-max-priority`` 9, each in its own RabbitMQ vhost:

- ``send_many``: ``brokers.client.Client.send_many`` (contract validation, signing, pipelined
  confirms), timed from the payloads to the last confirm;
- ``dramatiq_confirmed``: Dramatiq's ``actor.send()`` on ``RabbitmqBroker(confirm_delivery=True)``,
  which waits for each confirm in turn (so it sends fewer messages);
- ``raw_pika``: ``bench.amqp.ConfirmWindowPublisher`` (a 500-message confirm window) publishing
  bodies built beforehand: the floor for a Python producer on pika;
- ``raw_pika_building``: the same publisher building each body with ``build_message`` as it goes,
  for reference: what is left between it and ``send_many`` is the client's publishing, and what
  lies between it and ``raw_pika`` is the cost of building (validating, signing) messages;
- ``dramatiq_unconfirmed``: ``actor.send()`` without confirms, for reference (a returned send can
  still be lost).

Queues are purged after every measurement so that each one starts on an empty queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.amqp import ConfirmWindowPublisher, Outgoing
from bench.harness import (
    Comparison,
    ComparisonResult,
    Contender,
    Measurement,
    RatioSpec,
    Scale,
    run_side_by_side,
    summarise,
    time_call,
)
from bench.noop import MAX_PRIORITY
from brokers.client import Client, build_message
from brokers.settings import Settings
from brokers.stack import build_broker
from contracts.priorities import broker_priority
from contracts.registry import ActorContract, get_contract
from contracts.signing import SIGNATURE_OPTION
from tests.services import rabbitmq_vhost

ACTOR = "notifications.send_email"
SIGNING_KEY = b"edujobs-bench-signing-key"
#: A stand-in signature (hex HMAC-SHA256 length) so that Dramatiq's messages are as large as ours.
PLACEHOLDER_SIGNATURE = "0" * 64


def payload(index: int) -> dict[str, Any]:
    return {"user_id": index + 1, "template": "welcome"}


def _purge(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_purge(queue=queue)
    finally:
        connection.close()


class SendMany:
    """edujobs' producer client, on the topology that ``EdujobsBroker`` declares."""

    def __init__(self, url: str, contract: ActorContract) -> None:
        self.url, self.contract = url, contract
        broker = build_broker(Settings(rabbitmq_url=url))
        try:
            broker.declare_topology((contract.queue,))
        finally:
            broker.close()
        self.client = Client(url, signing_key=SIGNING_KEY)
        # Warm up: the connection, the channel in confirm mode and the queue check happen once.
        self.client.send(ACTOR, payload(0))
        _purge(url, contract.queue)

    def measure(self, count: int) -> Measurement:
        payloads = [payload(i) for i in range(count)]
        measurement = time_call(count, lambda: self.client.send_many(ACTOR, payloads))
        _purge(self.url, self.contract.queue)
        return measurement

    def close(self) -> None:
        self.client.close()


class DramatiqSend:
    """Dramatiq's ``actor.send()`` on its own RabbitmqBroker (not the global one)."""

    def __init__(self, url: str, contract: ActorContract, *, confirm_delivery: bool) -> None:
        self.url, self.contract = url, contract
        self.broker = RabbitmqBroker(url=url, max_priority=MAX_PRIORITY, confirm_delivery=confirm_delivery)
        self.actor = dramatiq.actor(
            actor_name=contract.actor_name, queue_name=contract.queue, broker=self.broker
        )(_never_run)
        # The same options edujobs' messages carry, so that both bodies have the same size.
        self.options: dict[str, Any] = {
            "broker_priority": broker_priority(contract.priority),
            "priority_name": contract.priority,
            SIGNATURE_OPTION: PLACEHOLDER_SIGNATURE,
        }
        self._send(contract.validate(payload(0)))  # warm up: connection, channel, queue declarations
        _purge(url, contract.queue)

    def _send(self, kwargs: dict[str, Any]) -> None:
        self.actor.send_with_options(kwargs=kwargs, **self.options)

    def measure(self, count: int) -> Measurement:
        kwargs = [self.contract.validate(payload(i)) for i in range(count)]

        def send_all() -> None:
            for item in kwargs:
                self._send(item)

        measurement = time_call(count, send_all)
        _purge(self.url, self.contract.queue)
        return measurement

    def close(self) -> None:
        self.broker.close()


def _never_run(**kwargs: Any) -> None:
    raise RuntimeError("the enqueue benchmark never runs a worker")


class RawPika:
    """Raw pika with a confirm window, publishing the bodies edujobs builds (and signs): built
    beforehand (the floor of publishing alone), or inline (``build_inline``: the same work as
    ``send_many``, which tells the cost of building messages from the cost of publishing them)."""

    def __init__(self, url: str, contract: ActorContract, *, build_inline: bool = False) -> None:
        self.contract = contract
        self.build_inline = build_inline
        self.publisher = ConfirmWindowPublisher(url)
        self.publisher.declare_queue(contract.queue, {"x-max-priority": MAX_PRIORITY})

    def measure(self, count: int) -> Measurement:
        if self.build_inline:
            measurement = time_call(
                count, lambda: self.publisher.publish_all(self._build(i) for i in range(count))
            )
        else:
            messages = [self._build(i) for i in range(count)]
            measurement = time_call(count, lambda: self.publisher.publish_all(messages))
        self.publisher.purge(self.contract.queue)
        return measurement

    def _build(self, index: int) -> Outgoing:
        _id, routing_key, body, priority = build_message(
            self.contract, payload(index), signing_key=SIGNING_KEY
        )
        return routing_key, body, priority

    def close(self) -> None:
        self.publisher.close()


def body_sizes(contract: ActorContract) -> dict[str, int]:
    """The body size each contender publishes (they are meant to be equal)."""
    ours = build_message(contract, payload(0), signing_key=SIGNING_KEY)[2]
    theirs = dramatiq.Message(
        queue_name=contract.queue,
        actor_name=contract.actor_name,
        args=(),
        kwargs=contract.validate(payload(0)),
        options={
            "broker_priority": broker_priority(contract.priority),
            "priority_name": contract.priority,
            SIGNATURE_OPTION: PLACEHOLDER_SIGNATURE,
        },
    ).encode()
    return {"edujobs": len(ours), "dramatiq": len(theirs)}


@contextmanager
def _opened(factory: Callable[[str], Any]) -> Iterator[Any]:
    with rabbitmq_vhost() as url:
        contender = factory(url)
        try:
            yield contender
        finally:
            with contextlib.suppress(Exception):  # closing is best effort; the vhost goes anyway
                contender.close()


def run(scale: Scale) -> ComparisonResult:
    count = scale.pick(full=20_000, quick=2_000)
    one_by_one = scale.pick(full=2_000, quick=300)
    contract = get_contract(ACTOR)
    with ExitStack() as stack:
        send_many: SendMany = stack.enter_context(_opened(lambda url: SendMany(url, contract)))
        confirmed: DramatiqSend = stack.enter_context(
            _opened(lambda url: DramatiqSend(url, contract, confirm_delivery=True))
        )
        raw: RawPika = stack.enter_context(_opened(lambda url: RawPika(url, contract)))
        raw_building: RawPika = stack.enter_context(
            _opened(lambda url: RawPika(url, contract, build_inline=True))
        )
        unconfirmed: DramatiqSend = stack.enter_context(
            _opened(lambda url: DramatiqSend(url, contract, confirm_delivery=False))
        )
        # send_many and raw_pika first: the closest pair runs back to back every round.
        contenders = [
            Contender(
                "send_many",
                "edujobs Client.send_many (validate, sign, window 500)",
                lambda: send_many.measure(count),
            ),
            Contender(
                "raw_pika", "raw pika, window 500, bodies built beforehand", lambda: raw.measure(count)
            ),
            Contender(
                "raw_pika_building",
                "raw pika, window 500, building each body inline (reference)",
                lambda: raw_building.measure(count),
            ),
            Contender(
                "dramatiq_confirmed",
                "Dramatiq send(), confirm_delivery=True",
                lambda: confirmed.measure(one_by_one),
            ),
            Contender(
                "dramatiq_unconfirmed",
                "Dramatiq send(), no confirms (reference)",
                lambda: unconfirmed.measure(count),
            ),
        ]
        measurements = run_side_by_side(contenders, scale.rounds)
    sizes = body_sizes(contract)
    return summarise(
        name=COMPARISON.name,
        title=COMPARISON.title,
        contenders=contenders,
        measurements=measurements,
        ratios=[
            RatioSpec("send_many / Dramatiq confirmed", "send_many", "dramatiq_confirmed", target=10.0),
            RatioSpec("send_many / raw pika", "send_many", "raw_pika", target=0.7),
            RatioSpec("send_many / raw pika building inline", "send_many", "raw_pika_building"),
            RatioSpec("send_many / Dramatiq unconfirmed", "send_many", "dramatiq_unconfirmed"),
        ],
        notes=[
            f"{count} persistent messages per run ({one_by_one} for Dramatiq confirmed), "
            f"bodies {sizes['edujobs']} bytes (edujobs) / {sizes['dramatiq']} bytes (Dramatiq), "
            f"queue x-max-priority {MAX_PRIORITY}",
        ],
    )


COMPARISON = Comparison(name="enqueue", title="(b) Enqueue rate with publisher confirms", run=run)
