"""Worker heartbeats and queue-depth samples: which worker processes are alive and what they do,
and how the backlog moved (``edujobs workers``, ``GET /v1/workers``, ``GET /v1/trends``).

Each worker process upserts one row of ``worker_heartbeats`` every few seconds
(``middleware.heartbeats`` through ``HeartbeatRecorder``). The database, not Redis, keeps them:
it is the one store every deployment has (Redis is optional), the API and CLI read it already,
and a beat every 5 s per process is one indexed upsert, nothing next to job state. A row whose
beat is older than ``stale_beats`` of its own interval is *stale* (the process died without saying
so: SIGKILL, OOM, a lost node); a process that shut down cleanly marks itself *stopped*; rows
silent for ``forget_seconds`` are deleted by the next beat of any worker.

The same thread samples the depth of its queues (ready messages, and those ready in the delay
queue) into ``queue_samples``, one row per queue and minute (later samples of the minute replace
earlier ones, so several workers of a queue write the same row), kept ``SAMPLE_RETENTION``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Engine, Float, String, Table, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base
from store.types import utcnow
from store.upsert import upsert

#: How long queue samples are kept: the longest trend window (24 h) and a margin.
SAMPLE_RETENTION = timedelta(hours=25)


class WorkerHeartbeat(Base):
    """The last heartbeat of one worker process."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    parent_pid: Mapped[int]
    pool: Mapped[str] = mapped_column(String(128))
    queues: Mapped[list[str]]
    threads: Mapped[int]
    in_flight: Mapped[int]
    processed: Mapped[int] = mapped_column(BigInteger())
    failed: Mapped[int] = mapped_column(BigInteger())
    interval_seconds: Mapped[float] = mapped_column(Float())
    started_at: Mapped[datetime]
    beat_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]


class QueueSample(Base):
    """A queue's depth at one minute."""

    __tablename__ = "queue_samples"

    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    ready: Mapped[int]
    delayed: Mapped[int]


_beats: Table = WorkerHeartbeat.__table__  # type: ignore[assignment]
_samples: Table = QueueSample.__table__  # type: ignore[assignment]


class HeartbeatRecorder:
    """What ``brokers.setup`` hands to the heartbeat middleware: writes beats and samples."""

    def __init__(self, engine: Engine, *, forget_seconds: float = 86_400.0) -> None:
        self.engine = engine
        self.forget_seconds = forget_seconds

    def beat(self, beat: Mapping[str, Any]) -> None:
        """Upsert this process's row (``beat`` carries the columns) and forget long-silent ones."""
        now = utcnow()
        row = {**beat, "beat_at": now, "stopped_at": None}
        changes = {k: v for k, v in row.items() if k not in ("id", "started_at")}
        with self.engine.begin() as connection:
            upsert(connection, _beats, row, keys=["id"], update=changes)
            cutoff = now - timedelta(seconds=self.forget_seconds)
            connection.execute(delete(_beats).where(_beats.c.beat_at < cutoff))

    def stopped(self, worker: str) -> None:
        """Mark a process that shut down cleanly (it is then listed as stopped, not stale)."""
        with self.engine.begin() as connection:
            connection.execute(update(_beats).where(_beats.c.id == worker).values(stopped_at=utcnow()))

    def sample(self, depths: Mapping[str, tuple[int, int]]) -> None:
        """Record ``{queue: (ready, delayed)}`` for the current minute; drop old samples."""
        now = utcnow()
        minute = now.replace(second=0, microsecond=0)
        with self.engine.begin() as connection:
            for queue, (ready, delayed) in depths.items():
                row = {"queue": queue, "at": minute, "ready": ready, "delayed": delayed}
                upsert(
                    connection,
                    _samples,
                    row,
                    keys=["queue", "at"],
                    update={"ready": ready, "delayed": delayed},
                )
            connection.execute(delete(_samples).where(_samples.c.at < now - SAMPLE_RETENTION))


@dataclass(frozen=True)
class WorkerView:
    """A worker process as operators see it; ``status`` is alive, stale or stopped."""

    row: WorkerHeartbeat
    status: str
    silent_seconds: float

    def as_dict(self) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "parent_pid": r.parent_pid,
            "pool": r.pool,
            "queues": list(r.queues),
            "threads": r.threads,
            "in_flight": r.in_flight,
            "processed": r.processed,
            "failed": r.failed,
            "started_at": r.started_at.isoformat(),
            "last_beat_at": r.beat_at.isoformat(),
            "stopped_at": r.stopped_at.isoformat() if r.stopped_at else None,
            "silent_seconds": round(self.silent_seconds, 1),
            "status": self.status,
        }


def list_workers(engine: Engine, *, stale_beats: int = 3, now: datetime | None = None) -> list[WorkerView]:
    """Every worker process that beat within the forget window: alive ones first, by pool and host."""
    from sqlalchemy.orm import Session

    now = now or utcnow()
    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.scalars(select(WorkerHeartbeat)))
    views = []
    for row in rows:
        silent = max(0.0, (now - row.beat_at).total_seconds())
        if row.stopped_at is not None:
            status = "stopped"
        elif silent > stale_beats * row.interval_seconds:
            status = "stale"
        else:
            status = "alive"
        views.append(WorkerView(row, status, silent))
    order = {"alive": 0, "stale": 1, "stopped": 2}
    return sorted(views, key=lambda v: (order[v.status], v.row.pool, v.row.host, v.row.pid))


def queue_samples(engine: Engine, since: datetime) -> Sequence[QueueSample]:
    """The queue samples taken at or after ``since``, oldest first."""
    from sqlalchemy.orm import Session

    statement = select(QueueSample).where(QueueSample.at >= since).order_by(QueueSample.at)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(statement))
