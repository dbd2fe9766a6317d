"""Queue topology: the domain queues and the names of their companion queues.

Each domain queue ``Q`` has Dramatiq's ``Q.DQ`` (delayed messages) and ``Q.XQ`` (dead letters),
and edujobs adds ``Q.park``, where messages delayed longer than ``PARK_THRESHOLD_MS`` wait durably:
a quorum queue whose message TTL dead-letters them back to ``Q.DQ`` *at least once* (RabbitMQ keeps
a message there, retrying, until ``Q.DQ`` has confirmed it), so a parked message cannot vanish on
the way back even if ``Q.DQ`` is missing or refusing at that moment (see ``brokers.rabbitmq``).

``Q.wait`` is the classic queue earlier versions parked in (dead-lettering at most once); it is no
longer declared. One left by an earlier version keeps moving its messages to ``Q.DQ`` by itself
within one hop, and ``edujobs queues declare`` deletes it once it is empty (README, "Parking").
"""

from __future__ import annotations

DOMAIN_QUEUES: tuple[str, ...] = ("notifications", "media", "reports", "academics", "maintenance")

#: A delayed message due later than this is parked in ``Q.park`` instead of held unacked in
#: worker memory, so that RabbitMQ's consumer_timeout (30 min by default) never fires.
PARK_THRESHOLD_MS = 10 * 60 * 1000

#: How long one stay in ``Q.park`` lasts before the message comes back to ``Q.DQ`` to be looked at again.
PARK_HOP_MS = 10 * 60 * 1000

_SUFFIXES = (".DQ", ".XQ", ".park", ".wait")


def canonical(queue_name: str) -> str:
    for suffix in _SUFFIXES:
        if queue_name.endswith(suffix):
            return queue_name[: -len(suffix)]
    return queue_name


def delay_queue(queue_name: str) -> str:
    return canonical(queue_name) + ".DQ"


def dead_letter_queue(queue_name: str) -> str:
    return canonical(queue_name) + ".XQ"


def park_queue(queue_name: str) -> str:
    return canonical(queue_name) + ".park"


def legacy_wait_queue(queue_name: str) -> str:
    """The classic parking queue of earlier versions (see the module docstring)."""
    return canonical(queue_name) + ".wait"
