"""Trends per queue over the last hour or day: processed, failed and backlog (``GET /v1/trends``).

Processed and failed come from job state (``job_records``): every attempt that ended leaves its
row's ``finished_at`` and state, so one GROUP BY over the index ``(finished_at, queue, state)``
counts them per bucket without touching the table. A row holds a job's last state only: a job that
failed and then succeeded counts once, as processed, at its last end (failures retried since are
not in the failed series; dead letters and failures still waiting for a retry are). Jobs whose
state is not recorded (``EDUJOBS_RECORD_JOB_STATE=false``) are not counted.

Backlog cannot be read back from job rows (a row does not say when it stopped waiting across
retries), so the workers' heartbeat threads sample their queues' depth once a beat into
``queue_samples`` (``store.workers``; ready messages, and those ready in the delay queue), one row
per queue and minute; a bucket shows the highest sample in it, and no value when no worker sampled
(no worker was running).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, cast, func, literal_column, select

from store.models import JobRecord
from store.types import utcnow
from store.workers import queue_samples


@dataclass(frozen=True)
class Window:
    name: str
    seconds: int
    bucket_seconds: int


WINDOWS = {"1h": Window("1h", 3600, 60), "24h": Window("24h", 86_400, 900)}


def trends(engine: Engine, window: str = "1h", *, now: datetime | None = None) -> dict[str, Any]:
    """Per queue, per bucket of ``window`` (``1h``: minutes, ``24h``: quarter hours): attempts
    ended (``processed``), of which failed (``failed``), and the backlog (``backlog``; None where no
    sample was taken). ``buckets`` are the buckets' start times (ISO 8601, UTC), oldest first."""
    if window not in WINDOWS:
        raise ValueError(f"window: {window!r} is not one of {', '.join(WINDOWS)}")
    spec = WINDOWS[window]
    now = now or utcnow()
    step = spec.bucket_seconds
    last = int(now.timestamp()) // step
    first = last - spec.seconds // step + 1
    count = last - first + 1
    start = datetime.fromtimestamp(first * step, UTC)

    series: dict[str, dict[str, list[Any]]] = {}

    def of(queue: str) -> dict[str, list[Any]]:
        return series.setdefault(
            queue, {"processed": [0] * count, "failed": [0] * count, "backlog": [None] * count}
        )

    bucket = _bucket(engine, step)
    finished = JobRecord.finished_at
    statement = (
        select(JobRecord.queue, JobRecord.state, bucket, func.count())
        .where(finished >= start, JobRecord.state.in_(("succeeded", "failed", "dead")))
        .group_by(JobRecord.queue, JobRecord.state, bucket)
    )
    with engine.connect() as connection:
        for queue, state, index, n in connection.execute(statement).all():
            position = int(index) - first
            if not 0 <= position < count or not queue:
                continue
            of(queue)["processed"][position] += int(n)
            if state != "succeeded":
                of(queue)["failed"][position] += int(n)
    for sample in queue_samples(engine, start):
        position = int(sample.at.timestamp()) // step - first
        if 0 <= position < count:
            backlog = of(sample.queue)["backlog"]
            value = sample.ready + sample.delayed
            backlog[position] = value if backlog[position] is None else max(backlog[position], value)
    buckets = [(start + timedelta(seconds=i * step)).isoformat() for i in range(count)]
    return {
        "window": spec.name,
        "bucket_seconds": step,
        "buckets": buckets,
        "queues": {queue: series[queue] for queue in sorted(series)},
    }


def _bucket(engine: Engine, step: int) -> Any:
    """The bucket number of ``finished_at`` (UNIX seconds // step) in SQL, per dialect."""
    finished = JobRecord.finished_at
    # The step as a literal, not a parameter: PostgreSQL must see the same expression in SELECT
    # and GROUP BY, and two parameters are two expressions to it.
    size: Any = literal_column(str(int(step)))
    if engine.dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", finished) / size), Integer).label("bucket")
    return (cast(func.strftime("%s", finished), Integer) / size).label("bucket")
