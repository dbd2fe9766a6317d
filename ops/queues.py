"""Queue control for operators, shared by the CLI (``edujobs queues``) and the HTTP API.

- ``overview``: per domain queue and event handler queue, from RabbitMQ's management API: ready,
  unacked (held by workers), delayed (``.DQ``), waiting (``.park``), dead (``.XQ``), consumers,
  publish and ack rates, the age of the oldest ready message; and from the database whether
  operators paused it.
- ``pause`` / ``resume``: the flag ``store.pauses`` keeps; the workers' ``QueuePauses`` middleware
  acts on it within its poll (2 s): they stop taking the queue's messages, which stay in RabbitMQ.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from brokers.queue_stats import QueueStatsReader, vhost_of
from brokers.topology import ALL_QUEUES
from contracts.errors import EdujobsError
from store import pauses


class UnknownQueueError(EdujobsError):
    """Raised for a queue name that is neither a domain queue nor an event handler's."""


def check_queue(queue: str) -> str:
    if queue not in ALL_QUEUES:
        raise UnknownQueueError(f"unknown queue {queue!r}: use one of {', '.join(ALL_QUEUES)}")
    return queue


def overview(*, management_url: str, rabbitmq_url: str, engine: Engine) -> list[dict[str, Any]]:
    """Every domain queue's figures and pause state (raises ``QueueStatsError`` if RabbitMQ cannot tell)."""
    reader = QueueStatsReader(management_url=management_url, vhost=vhost_of(rabbitmq_url))
    try:
        depths = reader.read()
    finally:
        reader.close()
    paused = pauses.paused_queues(engine)
    rows = []
    for depth in depths:
        pause = paused.get(depth.queue)
        rows.append(
            {
                "queue": depth.queue,
                **depth.kinds(),
                "consumers": depth.consumers,
                "publish_rate": depth.publish_rate,
                "ack_rate": depth.ack_rate,
                "oldest_age_seconds": depth.oldest_age_seconds,
                "paused": pause is not None,
                "paused_by": pause.paused_by if pause else None,
                "paused_at": pause.paused_at.isoformat() if pause else None,
                "pause_reason": pause.reason if pause else None,
            }
        )
    return rows


def pause(engine: Engine, queue: str, *, by: str, reason: str | None = None) -> dict[str, Any]:
    """Pause ``queue``; say whether it changed."""
    changed = pauses.pause(engine, check_queue(queue), by=by, reason=reason)
    return {"queue": queue, "paused": True, "changed": changed}


def resume(engine: Engine, queue: str, *, by: str) -> dict[str, Any]:
    """Resume ``queue``; say whether it changed."""
    changed = pauses.resume(engine, check_queue(queue), by=by)
    return {"queue": queue, "paused": False, "changed": changed}
