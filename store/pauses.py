"""Paused queues: an operator's ``edujobs queues pause QUEUE`` until ``resume``.

The flag lives in the database, so it survives worker and API restarts and every worker process
sees it (the ``QueuePauses`` middleware polls ``paused_queues``). Pausing and resuming are written
to the audit log.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from store import audit
from store.models import Base
from store.types import utcnow
from store.upsert import insert_if_absent


class QueuePause(Base):
    """A queue whose messages workers do not take, and who paused it."""

    __tablename__ = "queue_pauses"

    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(default=utcnow)
    paused_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(String(500))


def pause(engine: Engine, queue: str, *, by: str, reason: str | None = None) -> bool:
    """Pause ``queue``; False if it was paused already (nothing changes then)."""
    with engine.begin() as connection:
        added = insert_if_absent(
            connection,
            QueuePause.__table__,  # type: ignore[arg-type]
            {"queue": queue, "paused_at": utcnow(), "paused_by": by, "reason": reason},
            keys=["queue"],
        )
    if added:
        audit.record(engine, actor=by, action="queue.pause", target=queue, details={"reason": reason})
    return added


def resume(engine: Engine, queue: str, *, by: str) -> bool:
    """Resume ``queue``; False if it was not paused."""
    with engine.begin() as connection:
        removed = connection.execute(delete(QueuePause).where(QueuePause.queue == queue)).rowcount > 0
    if removed:
        audit.record(engine, actor=by, action="queue.resume", target=queue)
    return removed


def paused_queues(engine: Engine) -> dict[str, QueuePause]:
    """Every paused queue, by name."""
    with Session(engine, expire_on_commit=False) as session:
        return {p.queue: p for p in session.scalars(select(QueuePause))}
