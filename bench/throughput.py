"""Comparison (a): no-op actor throughput, edujobs' broker set-up versus plain Dramatiq.

Each run gets its own RabbitMQ vhost and Redis key, and the edujobs worker a migrated SQLite database
of its own (job state is recorded there, as a worker does by default). The ``bench`` queue is declared by the
contender's own broker class (so the worker finds exactly the arguments it expects), pre-filled
with N messages in Dramatiq's format through a raw pika confirm window, and then drained by
``dramatiq MODULE --processes 1 --threads 8``; the rate runs from the first to the last INCR.

Messages come from a ``MessageFactory``. The edujobs factory builds them with the producer
client's ``build_message`` (contract, priority and signature, as every producer does); the plain
one encodes ``dramatiq.Message`` and takes an optional ``sign`` hook, so that a signed variant
can be measured the day plain messages need one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.message import Message

from bench.amqp import ConfirmWindowPublisher, Outgoing
from bench.harness import (
    Comparison,
    ComparisonResult,
    Contender,
    Measurement,
    RatioSpec,
    Scale,
    measure_drain,
    redis_counter,
    run_side_by_side,
    summarise,
)
from bench.noop import ACTOR, MAX_PRIORITY, QUEUE, RABBITMQ_URL_ENV
from brokers.client import build_message
from brokers.settings import ENV_PREFIX, Settings
from brokers.stack import build_broker
from contracts.registry import ActorContract, Contract
from store.migrate import upgrade
from tests.services import rabbitmq_vhost

THREADS = 8

MessageFactory = Callable[[], Outgoing]
SignHook = Callable[[dict[str, Any]], dict[str, Any]]


class NoArguments(Contract):
    """The no-op actor takes no arguments."""


#: The benchmark actor's contract, built here rather than registered: producers of real actors
#: never see it.
NOOP_CONTRACT = ActorContract(actor_name=ACTOR, queue=QUEUE, priority="normal", model=NoArguments)


def edujobs_messages(settings: Settings) -> MessageFactory:
    """Messages as edujobs' producers build them: validated, prioritised and signed."""
    key = settings.keyring()

    def build() -> Outgoing:
        _id, routing_key, body, priority = build_message(NOOP_CONTRACT, {}, signing_key=key)
        return routing_key, body, priority

    return build


def plain_messages(sign: SignHook | None = None) -> MessageFactory:
    """Messages as ``actor.send()`` encodes them; ``sign`` may add options (a signature) first."""

    def build() -> Outgoing:
        message: Message[None] = Message(queue_name=QUEUE, actor_name=ACTOR, args=(), kwargs={}, options={})
        if sign is not None:
            message = Message(**sign(message.asdict()))
        return QUEUE, message.encode(), message.options.get("broker_priority")

    return build


def prefill(url: str, factory: MessageFactory, count: int) -> None:
    def messages() -> Iterator[Outgoing]:
        for _ in range(count):
            yield factory()

    with ConfirmWindowPublisher(url) as publisher:
        publisher.publish_all(messages())


def measure_edujobs(count: int) -> Measurement:
    with rabbitmq_vhost() as url, redis_counter() as counter, tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        upgrade(database_url)
        settings = Settings(rabbitmq_url=url, database_url=database_url)
        broker = build_broker(settings)
        try:
            broker.declare_queue(QUEUE, ensure=True)
        finally:
            broker.close()
        prefill(url, edujobs_messages(settings), count)
        return measure_drain(
            module="bench.edujobs_actors",
            env={f"{ENV_PREFIX}RABBITMQ_URL": url, f"{ENV_PREFIX}DATABASE_URL": database_url},
            counter=counter,
            expected=count,
            threads=THREADS,
        )


def measure_plain(count: int) -> Measurement:
    with rabbitmq_vhost() as url, redis_counter() as counter:
        broker = RabbitmqBroker(url=url, max_priority=MAX_PRIORITY)
        try:
            broker.declare_queue(QUEUE, ensure=True)
        finally:
            broker.close()
        prefill(url, plain_messages(), count)
        return measure_drain(
            module="bench.plain_actors",
            env={RABBITMQ_URL_ENV: url},
            counter=counter,
            expected=count,
            threads=THREADS,
        )


def run(scale: Scale) -> ComparisonResult:
    count = scale.pick(full=20_000, quick=2_000)
    contenders = [
        Contender(
            "edujobs", "edujobs broker set-up (EdujobsBroker + middleware)", lambda: measure_edujobs(count)
        ),
        Contender(
            "plain", "plain Dramatiq (RabbitmqBroker, default middleware)", lambda: measure_plain(count)
        ),
    ]
    return summarise(
        name=COMPARISON.name,
        title=COMPARISON.title,
        contenders=contenders,
        measurements=run_side_by_side(contenders, scale.rounds),
        ratios=[RatioSpec("edujobs / plain", "edujobs", "plain", target=0.90)],
        notes=[
            f"{count} pre-filled messages per run, dramatiq --processes 1 --threads {THREADS}, "
            "one Redis INCR per message; edujobs runs its whole middleware stack and records job state "
            "in SQLite; target 0.90",
        ],
    )


COMPARISON = Comparison(name="throughput", title="(a) No-op actor throughput", run=run)
