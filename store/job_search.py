"""Job search: the jobs of a user, an actor, a state, an enqueuer, newest first, page by page
(``GET /v1/jobs``, ``edujobs jobs list``, the page's job search).

Pages are keyset pages over ``(created_at, message_id)`` descending, both fixed once a job is
recorded: the cursor names the last row of a page and the next page starts strictly after it, so
no job is skipped or shown twice while others are added or change state (an OFFSET would shift
under both, and cost a scan of every row it skips). Each filter that narrows a listing has an index
led by it and followed by the sort key (``store.models.JobRecord``): PostgreSQL walks it backwards
from the cursor and stops after ``limit`` rows, whatever the table's size (``user_id``, ``enqueued_by``,
``state``; ``created_at`` alone when none is given). ``actor`` narrows those walks.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.orm import Session

from contracts.errors import EdujobsError
from store.models import JOB_STATE_VALUES, JobRecord

MAX_LIMIT = 500


class JobSearchError(EdujobsError, ValueError):
    """Raised when a job search has a bad filter or cursor; the message names the field."""


@dataclass(frozen=True)
class JobFilter:
    """What to list; None means any. ``enqueued_by`` scopes a service token to its own jobs."""

    user_id: int | None = None
    actor: str | None = None
    state: str | None = None
    since: datetime | None = None
    enqueued_by: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in JOB_STATE_VALUES:
            raise JobSearchError(f"state: {self.state!r} is not one of {', '.join(JOB_STATE_VALUES)}")
        if self.since is not None and self.since.tzinfo is None:
            raise JobSearchError("since: give a time zone, e.g. 2026-12-03T10:00:00Z")


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRecord]
    next_cursor: str | None


def encode_cursor(job: JobRecord) -> str:
    raw = f"{job.created_at.isoformat()}|{job.message_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, message_id = raw.split("|", 1)
        when = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise JobSearchError("cursor: not a cursor this API gave (pass next_cursor as it came)") from None
    if when.tzinfo is None or not message_id:
        raise JobSearchError("cursor: not a cursor this API gave (pass next_cursor as it came)")
    return when, message_id


def search_jobs(engine: Engine, where: JobFilter, *, cursor: str | None = None, limit: int = 50) -> JobPage:
    """One page of the jobs matching ``where``, newest first, and the cursor of the next page
    (None on the last)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise JobSearchError(f"limit: give 1 to {MAX_LIMIT}, not {limit}")
    statement = select(JobRecord)
    if where.user_id is not None:
        statement = statement.where(JobRecord.user_id == where.user_id)
    if where.enqueued_by is not None:
        statement = statement.where(JobRecord.enqueued_by == where.enqueued_by)
    if where.actor is not None:
        statement = statement.where(JobRecord.actor_name == where.actor)
    if where.state is not None:
        statement = statement.where(JobRecord.state == where.state)
    if where.since is not None:
        statement = statement.where(JobRecord.created_at >= where.since)
    if cursor is not None:
        at, message_id = decode_cursor(cursor)
        # A row-value comparison: PostgreSQL and SQLite both start the index walk at it.
        statement = statement.where(
            tuple_(JobRecord.created_at, JobRecord.message_id) < tuple_(at, message_id)
        )
    statement = statement.order_by(JobRecord.created_at.desc(), JobRecord.message_id.desc()).limit(limit + 1)
    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.scalars(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(rows, encode_cursor(rows[-1]) if more and rows else None)
