"""What a schedule's fire does: enqueue its actor's message through ``brokers.client``.

``enqueue`` is the function every stored APScheduler job names (``schedules.fire:enqueue``), so the
job store's contents stay meaningful to APScheduler; the scheduler itself calls ``send`` with each
fire's idempotency key. Neither imports actor code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def send(
    actor: str, payload: dict[str, Any], priority: str | None, idempotency_key: str, schedule: str
) -> str:
    """Publish one message (confirmed by RabbitMQ) and return its id. The message carries the
    ``schedule`` option: a worker's Metrics middleware sets the schedule's last success when it succeeds."""
    from brokers.client import default_client

    return default_client().send(
        actor, payload, priority=priority, idempotency_key=idempotency_key, options={"schedule": schedule}
    )


def enqueue(schedule: str, actor: str, payload: dict[str, Any], priority: str | None, timezone: str) -> str:
    """Enqueue ``schedule``'s actor now, keyed by the current minute (APScheduler's entry point)."""
    from schedules.scheduler import fire_key

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return send(actor, payload, priority, fire_key(schedule, now), schedule)
