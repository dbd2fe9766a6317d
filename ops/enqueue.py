"""Enqueueing through the HTTP API: the request model, publishing with pipelined confirms, and
what every enqueue leaves behind (an ``enqueued`` job record per message, an audit entry per request).

A batch is published with ``brokers.client.Client.send_many``, one call per group of messages that
share an actor and scheduling options (priority, delay, eta, with or without an idempotency key):
RabbitMQ confirms a whole group in one window instead of one message at a time. Messages keep their
order within a group; the ids come back in the request's order.

The records and the audit entry are written after RabbitMQ confirmed: a message that was published
stays published even if the database then fails (the failure is logged; the caller still gets 202,
because answering 5xx would make it send the messages again).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Engine

from brokers.client import Client
from contracts.priorities import Priority
from contracts.registry import get_contract
from ops.auth import Caller
from store import audit
from store.jobs import JobStore, user_id_of

logger = logging.getLogger(__name__)

#: How many message ids an audit entry keeps (a batch may hold a thousand).
AUDITED_IDS = 10


class MessageIn(BaseModel):
    actor: str = Field(examples=["notifications.send_email"], max_length=128)
    payload: dict[str, Any] = Field(description="The actor's arguments")
    priority: Priority | None = None
    delay: float | None = Field(default=None, ge=0, le=7 * 86_400, description="Seconds before the job runs")
    eta: datetime | None = Field(default=None, description="When the job runs (time-zone aware)")
    idempotency_key: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _one_schedule(self) -> MessageIn:
        if self.delay is not None and self.eta is not None:
            raise ValueError("pass delay or eta, not both")
        if self.eta is not None and self.eta.tzinfo is None:
            raise ValueError("eta must carry a time zone, e.g. 2026-11-22T10:00:00+01:00")
        return self


def publish(client: Client, items: Sequence[MessageIn], sent: dict[int, str]) -> None:
    """Publish ``items`` group by group; ``sent`` maps each published item's index to its id (so
    that, if a group fails, the caller knows which were published before it)."""
    groups: dict[tuple[str, str | None, float | None, datetime | None, bool], list[int]] = {}
    for index, item in enumerate(items):
        key = (item.actor, item.priority, item.delay, item.eta, item.idempotency_key is not None)
        groups.setdefault(key, []).append(index)
    for (actor, priority, delay, eta, keyed), indexes in groups.items():
        keys = [str(items[i].idempotency_key) for i in indexes] if keyed else None
        ids = client.send_many(
            actor,
            [items[i].payload for i in indexes],
            priority=priority,
            delay=delay,
            eta=eta,
            idempotency_keys=keys,
        )
        sent.update(zip(indexes, ids, strict=True))


def record_enqueued(
    engine: Engine, items: Sequence[MessageIn], sent: Mapping[int, str], *, enqueued_by: str | None = None
) -> None:
    """An ``enqueued`` job per published message, so ``jobs show ID`` finds it at once (and
    ``GET /v1/jobs`` shows it to ``enqueued_by``)."""
    jobs = [
        (message_id, items[i].actor, get_contract(items[i].actor).queue, user_id_of(items[i].payload))
        for i, message_id in sorted(sent.items())
    ]
    try:
        JobStore(engine).record_enqueued_many(jobs, enqueued_by=enqueued_by)
    except Exception:
        logger.exception("Could not record %d enqueued jobs; the messages were sent.", len(jobs))


def audit_enqueue(
    engine: Engine,
    caller: Caller,
    items: Sequence[MessageIn],
    sent: Mapping[int, str],
    *,
    failed: str | None = None,
) -> None:
    """One audit entry per request: who, which actors, how many, the first ids (and, if publishing
    failed partway, why and how many were published before)."""
    actors = Counter(item.actor for item in items)
    details: dict[str, Any] = {
        "count": len(sent),
        "requested": len(items),
        "actors": dict(actors),
        "first_ids": [message_id for _, message_id in sorted(sent.items())][:AUDITED_IDS],
    }
    if failed is not None:
        details["failed"] = failed[:500]
    try:
        audit.record(
            engine,
            actor=f"token:{caller.name}",
            action="messages.enqueue",
            target=",".join(sorted(actors))[:255],
            details=details,
        )
    except Exception:
        logger.exception("Could not audit the enqueue of %d messages by %s.", len(sent), caller.name)
