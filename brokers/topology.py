"""Queue topology: the domain queues, the event handlers' queues and the names of their companions.

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

from contracts.events import handler_queues

DOMAIN_QUEUES: tuple[str, ...] = ("notifications", "media", "reports", "academics", "maintenance")

#: The queue of each event handler (``contracts.events.HANDLERS``; a handler's queue is named after
#: it), bound to its events on the ``edujobs.events`` exchange.
HANDLER_QUEUES: tuple[str, ...] = handler_queues()

#: Every queue workers consume, each with the same companions: what operators' tools (figures,
#: metrics, health, dead-letter review and archival, pauses) cover.
ALL_QUEUES: tuple[str, ...] = DOMAIN_QUEUES + HANDLER_QUEUES

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
