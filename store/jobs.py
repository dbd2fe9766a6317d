"""Job state: what happened to each message, queryable by message id and by user.

``JobStore`` is the job-state recorder that ``brokers.setup`` hands to the job-state middleware,
and what the CLI and HTTP API read. Every call is one short transaction and an upsert, because a
worker may see a message whose enqueueing was never recorded (sent by another language, or the
producer's record came second). Calls never move a job backwards: a late ``record_enqueued``
does not undo ``running``, and nothing but another ``mark_cancelled`` overwrites ``cancelled``
(a cancelled message that a worker still receives should be skipped; ``get`` tells it so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.models import JobRecord
from store.types import utcnow
from store.upsert import upsert

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000

_jobs: Table = JobRecord.__table__  # type: ignore[assignment]


class JobStore:
    """Reads and writes ``job_records``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_enqueued(
        self,
        message_id: str,
        actor_name: str,
        queue: str,
        user_id: int | None = None,
        *,
        enqueued_by: str | None = None,
    ) -> None:
        """Record that a message was sent (by ``enqueued_by``: ``token:<name>``, ``cli:<user>``);
        keeps any later state a worker already recorded."""
        values: dict[str, Any] = {"actor_name": actor_name, "queue": queue, "enqueued_at": utcnow()}
        if user_id is not None:
            values["user_id"] = user_id
        if enqueued_by is not None:
            values["enqueued_by"] = enqueued_by[:128]
        self._write(message_id, state="enqueued", values=values, update=values)

    def record_enqueued_many(
        self, jobs: Iterable[tuple[str, str, str, int | None]], *, enqueued_by: str | None = None
    ) -> int:
        """``record_enqueued`` for many ``(message_id, actor_name, queue, user_id)`` at once, in
        one statement (an API batch of a thousand messages); return how many were recorded."""
        now = utcnow()
        by = enqueued_by[:128] if enqueued_by is not None else None
        rows = [
            {
                "message_id": message_id,
                "actor_name": actor_name,
                "queue": queue,
                "user_id": user_id,
                "state": "enqueued",
                "enqueued_at": now,
                "updated_at": now,
                "created_at": now,
                "enqueued_by": by,
            }
            for message_id, actor_name, queue, user_id in jobs
        ]
        if not rows:
            return 0
        dialect = self.engine.dialect.name
        insert = postgresql.insert(_jobs) if dialect == "postgresql" else sqlite.insert(_jobs)
        # The state is left alone: a worker may have recorded ``running`` (or more) already.
        statement = insert.on_conflict_do_update(
            index_elements=["message_id"],
            set_={
                "actor_name": insert.excluded.actor_name,
                "queue": insert.excluded.queue,
                "user_id": func.coalesce(insert.excluded.user_id, _jobs.c.user_id),
                "enqueued_by": func.coalesce(insert.excluded.enqueued_by, _jobs.c.enqueued_by),
                "enqueued_at": insert.excluded.enqueued_at,
                "updated_at": insert.excluded.updated_at,
            },
        )
        with self.engine.begin() as connection:
            connection.execute(statement, rows)
        return len(rows)

    def mark_running(
        self, message_id: str, attempts: int, *, actor_name: str | None = None, queue: str | None = None
    ) -> None:
        """Record that an attempt started (``attempts`` counts this one)."""
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempts, "started_at": now, "finished_at": None, "error": None}
        self._write(
            message_id,
            state="running",
            values={**values, "progress": 0},
            update={**values, "state": "running", "progress": 0},
            names={"actor_name": actor_name, "queue": queue},
            where=_jobs.c.state != "cancelled",
        )

    def set_progress(self, message_id: str, percent: int) -> None:
        """Record how far a running job is (clamped to 0-100); progress never goes backwards."""
        percent = max(0, min(100, int(percent)))
        progress = _jobs.c.progress
        self._write(
            message_id,
            state="running",
            values={"progress": percent},
            update={"progress": case((progress < percent, percent), else_=progress)},
        )

    def mark_succeeded(self, message_id: str, result_summary: Mapping[str, Any] | None = None) -> None:
        """Record that the job finished; ``result_summary`` is a small JSON object for users."""
        values = {
            "progress": 100,
            "finished_at": utcnow(),
            "error": None,
            "result_summary": dict(result_summary) if result_summary is not None else None,
        }
        self._finish(message_id, "succeeded", values)

    def mark_failed(self, message_id: str, error: str, attempts: int) -> None:
        """Record that an attempt failed and will be retried."""
        self._finish(
            message_id,
            "failed",
            {"error": error[:MAX_ERROR_CHARS], "attempts": attempts, "finished_at": utcnow()},
        )

    def mark_dead(self, message_id: str, error: str) -> None:
        """Record that the message was dead-lettered (no more attempts)."""
        self._finish(message_id, "dead", {"error": error[:MAX_ERROR_CHARS], "finished_at": utcnow()})

    def mark_cancelled(self, message_id: str, reason: str | None = None) -> None:
        """Record that the job was cancelled; a worker receiving it afterwards should skip it."""
        now = utcnow()
        self._write(
            message_id,
            state="cancelled",
            values={"finished_at": now, "error": reason},
            update={"state": "cancelled", "finished_at": now, "error": reason},
            where=_jobs.c.state.not_in(("succeeded", "dead")),
        )

    def is_cancelled(self, message_id: str) -> bool:
        """Whether an operator cancelled the job (a running one checks at each progress point)."""
        return self._state(message_id) == "cancelled"

    def get(self, message_id: str) -> JobRecord | None:
        """The job record of ``message_id``, detached from any session."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(JobRecord, message_id)

    def list_for_user(self, user_id: int, limit: int = 50) -> list[JobRecord]:
        """The user's jobs, most recently updated first."""
        statement = (
            select(JobRecord)
            .where(JobRecord.user_id == user_id)
            .order_by(JobRecord.updated_at.desc(), JobRecord.message_id)
            .limit(limit)
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(statement))

    def _finish(self, message_id: str, state: str, values: dict[str, Any]) -> None:
        self._write(
            message_id,
            state=state,
            values=values,
            update={**values, "state": state},
            where=_jobs.c.state != "cancelled",
        )

    def _write(
        self,
        message_id: str,
        *,
        state: str,
        values: Mapping[str, Any],
        update: Mapping[str, Any],
        names: Mapping[str, str | None] | None = None,
        where: ColumnElement[bool] | None = None,
    ) -> None:
        known = {name: value for name, value in (names or {}).items() if value}
        now = utcnow()
        row = {
            "message_id": message_id,
            "actor_name": "",
            "queue": "",
            "state": state,
            **values,
            **known,
            "updated_at": now,
            "created_at": now,  # on insert only: ``changes`` never carries it
        }
        changes = {**update, **known, "updated_at": now}
        with self.engine.begin() as connection:
            written = upsert(connection, _jobs, row, keys=["message_id"], update=changes, where=where)
        if not written:
            logger.info("Job %s is %s already; %s not recorded.", message_id, self._state(message_id), state)

    def _state(self, message_id: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(select(_jobs.c.state).where(_jobs.c.message_id == message_id)).scalar()


def cancel(
    engine: Engine, message_id: str, *, by: str, reason: str | None = None, unrecorded: bool = False
) -> str:
    """Cancel a job, queued or running, and audit it; return its state afterwards (``unknown``
    when no job of that id is recorded and nothing was done).

    A queued job (recorded ``enqueued`` by the API, ``edujobs send`` or a worker's ``enqueue``) is
    marked ``cancelled``, so the worker that takes its message skips it (``middleware.cancellations``);
    a running one stops at its next progress point. A finished job (``succeeded``, ``dead``) keeps its
    state: the returned state says so. An id with no record is refused, since a mistyped id would
    otherwise be "cancelled" without effect, unless ``unrecorded``: for a message sent by a producer
    that records no job (``brokers.client``, another language), which gets a ``cancelled`` record.
    """
    from store import audit

    jobs = JobStore(engine)
    before = jobs.get(message_id)
    if before is None and not unrecorded:
        return "unknown"
    jobs.mark_cancelled(message_id, reason or f"cancelled by {by}")
    after = jobs.get(message_id)
    state = after.state if after is not None else "unknown"
    if state == "cancelled" and (before is None or before.state != "cancelled"):
        audit.record(
            engine,
            actor=by,
            action="job.cancel",
            target=message_id,
            details={"previous_state": before.state if before is not None else None, "reason": reason},
        )
    return state


def user_id_of(payload: Mapping[str, Any]) -> int | None:
    """The user a message is about, when its payload names one (``user_id``), for ``list_for_user``."""
    value = payload.get("user_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cancelled_since(engine: Engine, since: float) -> list[tuple[str, float]]:
    """Ids of the jobs cancelled at or after the UNIX time ``since``, with when."""
    from datetime import UTC, datetime

    statement = select(_jobs.c.message_id, _jobs.c.finished_at).where(
        _jobs.c.state == "cancelled", _jobs.c.finished_at >= datetime.fromtimestamp(since, UTC)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return [(message_id, at.timestamp()) for message_id, at in rows if at is not None]


def job_fields(job: JobRecord) -> dict[str, Any]:
    """What users and operators see of a job (``edujobs jobs show``, ``GET /v1/jobs/{id}``)."""
    return {
        "message_id": job.message_id,
        "actor": job.actor_name,
        "queue": job.queue,
        "state": job.state,
        "progress": job.progress,
        "attempts": job.attempts,
        "error": job.error,
        "result": job.result_summary,
        "enqueued_at": job.enqueued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
        "user_id": job.user_id,
        "enqueued_by": job.enqueued_by,
        "created_at": job.created_at,
    }


def count_by_state(engine: Engine) -> dict[str, int]:
    """How many jobs are in each state (for health summaries)."""
    statement = select(_jobs.c.state, func.count()).group_by(_jobs.c.state)
    with engine.connect() as connection:
        return {state: int(count) for state, count in connection.execute(statement).all()}
