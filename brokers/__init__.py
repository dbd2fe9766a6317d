"""How messages travel: settings, the RabbitMQ broker and its topology, the middleware stack,
the producer client and the dead-letter primitives.

``brokers.setup()`` is imported lazily so that ``brokers.client`` stays light for producers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dramatiq

    from brokers.settings import Settings


def setup(settings: Settings | None = None, *, declare: bool = False) -> dramatiq.Broker:
    """Build the RabbitMQ broker from settings and make it Dramatiq's global broker.

    Idempotent: a broker that is already set (a StubBroker in unit tests, or an earlier call) is kept.
    """
    from brokers.stack import setup_broker

    return setup_broker(settings, declare=declare)
