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

from contracts.signing import SIGNATURE_OPTION


class Priorities(Middleware):
    """Fills ``broker_priority`` of a new message from the actor option of the same name when the
    sender gave none."""

    def __init__(self, *, default: int | None = None) -> None:
        self.default = default

    @property
    def actor_options(self) -> set[str]:
        return {"broker_priority"}

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # A signed message's options are its sender's (and covered by its signature): a retry keeps
        # them as they are, and the broker reads the actor's priority for one that names none.
        if message.options.get("broker_priority") is not None or SIGNATURE_OPTION in message.options:
            return
        try:
            actor = broker.get_actor(message.actor_name)
        except ActorNotFound:
            priority = self.default
        else:
            priority = actor.options.get("broker_priority", self.default)
        if priority is not None:
            message.options["broker_priority"] = priority
