"""Queue topology: the domain queues and the names of their companion queues.

Each domain queue ``Q`` has Dramatiq's ``Q.DQ`` (delayed messages) and ``Q.XQ`` (dead letters),
and edujobs adds ``Q.wait`` where messages delayed longer than ``PARK_THRESHOLD_MS`` wait durably
(see ``brokers.rabbitmq``).
"""

from __future__ import annotations

DOMAIN_QUEUES: tuple[str, ...] = ("notifications", "media", "reports", "academics", "maintenance")

#: A delayed message due later than this is parked in ``Q.wait`` instead of held unacked in
#: worker memory, so that RabbitMQ's consumer_timeout (30 min by default) never fires.
PARK_THRESHOLD_MS = 10 * 60 * 1000

#: How long one stay in ``Q.wait`` lasts before the message comes back to ``Q.DQ`` to be looked at again.
PARK_HOP_MS = 10 * 60 * 1000


def canonical(queue_name: str) -> str:
    for suffix in (".DQ", ".XQ", ".wait"):
        if queue_name.endswith(suffix):
            return queue_name[: -len(suffix)]
    return queue_name


def delay_queue(queue_name: str) -> str:
    return canonical(queue_name) + ".DQ"


def dead_letter_queue(queue_name: str) -> str:
    return canonical(queue_name) + ".XQ"


def wait_queue(queue_name: str) -> str:
    return canonical(queue_name) + ".wait"
