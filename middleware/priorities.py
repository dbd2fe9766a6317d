"""Priorities: every message gets an AMQP priority, from the sender or else from its actor's default.

RabbitMQ orders *ready* messages by priority; what a consumer has already prefetched is not
reordered, so with ``prefetch`` messages in flight per worker process a new ``critical`` message
waits for at most that many messages ahead of it (README, "Priorities").
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Message
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware


class Priorities(Middleware):
    """Fills ``broker_priority`` from the actor option of the same name when the sender gave none."""

    def __init__(self, *, default: int | None = None) -> None:
        self.default = default

    @property
    def actor_options(self) -> set[str]:
        return {"broker_priority"}

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if message.options.get("broker_priority") is not None:
            return
        try:
            actor = broker.get_actor(message.actor_name)
        except ActorNotFound:
            priority = self.default
        else:
            priority = actor.options.get("broker_priority", self.default)
        if priority is not None:
            message.options["broker_priority"] = priority
