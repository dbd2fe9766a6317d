"""Named priorities and their AMQP values.

Queues are declared with ``x-max-priority`` = ``MAX_PRIORITY``; RabbitMQ delivers higher numbers
first among the messages that are ready and not yet prefetched by a consumer.
"""

from __future__ import annotations

from typing import Literal

Priority = Literal["critical", "high", "normal", "low", "bulk"]

#: The value of ``x-max-priority`` on every work queue.
MAX_PRIORITY = 9

PRIORITIES: dict[str, int] = {
    "critical": 9,
    "high": 7,
    "normal": 5,
    "low": 3,
    "bulk": 1,
}


def broker_priority(name: str) -> int:
    """Return the AMQP priority of a named priority, or raise ``ValueError`` naming the choices."""
    try:
        return PRIORITIES[name]
    except KeyError:
        choices = ", ".join(PRIORITIES)
        raise ValueError(f"unknown priority {name!r}: expected one of {choices}") from None
