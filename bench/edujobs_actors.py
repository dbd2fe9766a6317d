"""The no-op benchmark actor behind edujobs' broker set-up: ``dramatiq bench.edujobs_actors``.

``brokers.setup()`` builds the EdujobsBroker with edujobs' whole middleware stack from the
environment (``EDUJOBS_RABBITMQ_URL``), exactly as ``actors/__init__.py`` does for the real actors.
"""

from __future__ import annotations

import dramatiq

import brokers
from bench.noop import ACTOR, QUEUE, increment

brokers.setup()


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
def noop() -> None:
    increment()
