"""What a schedule's fire does: enqueue its actor's message through ``brokers.client``.

``enqueue`` is the function every stored APScheduler job names (``schedules.fire:enqueue``), so the
job store's contents stay meaningful to APScheduler; the scheduler itself calls ``send`` with each
fire's idempotency key. Neither imports actor code.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from brokers.client import Client

logger = logging.getLogger(__name__)


def send(
    actor: str, payload: dict[str, Any], priority: str | None, idempotency_key: str, schedule: str
) -> str:
    """Publish one message (confirmed by RabbitMQ) through the process's client and return its id
    (``send_fire`` with the default client and database)."""
    from brokers.client import default_client
    from store.db import get_engine

    return send_fire(default_client(), get_engine(), actor, payload, priority, idempotency_key, schedule)


def send_fire(
    client: Client,
    engine: Engine,
    actor: str,
    payload: dict[str, Any],
    priority: str | None,
    idempotency_key: str,
    schedule: str,
) -> str:
    """Publish one fire with ``client``. The message carries the ``schedule`` option (a worker's
    Metrics middleware sets the schedule's last success when it succeeds) and, for a recurring
    schedule stored in ``engine``'s job store, ``schedule_monitor`` (the worker's Sentry Crons
    check-ins describe the monitor with it: ``middleware.crons``)."""
    options: dict[str, Any] = {"schedule": schedule}
    monitor = _monitor(engine, schedule)
    if monitor is not None:
        options["schedule_monitor"] = monitor
    return client.send(actor, payload, priority=priority, idempotency_key=idempotency_key, options=options)


def _monitor(engine: Engine, schedule: str) -> dict[str, Any] | None:
    """The monitor of the stored schedule named ``schedule``; None if it is a one-off, or cannot be
    read (the fire is sent all the same: only the check-ins lack the monitor's description)."""
    from schedules.jobs import crontab_job_id, dynamic_job_id, job_store, monitor_of

    try:
        store = job_store(engine)
        job = store.lookup_job(crontab_job_id(schedule)) or store.lookup_job(dynamic_job_id(schedule))
    except Exception:
        logger.warning("Could not read schedule %s for its Sentry monitor.", schedule, exc_info=True)
        return None
    return None if job is None else monitor_of(job)


def enqueue(schedule: str, actor: str, payload: dict[str, Any], priority: str | None, timezone: str) -> str:
    """Enqueue ``schedule``'s actor now, keyed by the current minute (APScheduler's entry point)."""
    from schedules.scheduler import fire_key

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return send(actor, payload, priority, fire_key(schedule, now), schedule)
