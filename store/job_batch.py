"""Batched job-state writes: many state changes, one INSERT ... ON CONFLICT DO UPDATE.

The job-state middleware hands over every change of the last fraction of a second at once; the
changes of one message are merged (the last state wins, the start time of its latest attempt is
kept) and all messages are written in one statement, so recording state costs a worker a few
microseconds per message instead of a transaction each. A new attempt's progress starts from 0.
A cancelled job is never overwritten.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import Engine, Table, and_, case, func
from sqlalchemy.dialects import postgresql, sqlite

from store.models import JobRecord

_jobs: Table = JobRecord.__table__  # type: ignore[assignment]

TERMINAL = {"succeeded", "dead"}
MAX_ERROR_CHARS = 8000


class StateChange(Protocol):
    message_id: str
    state: str
    at: float
    actor_name: str
    queue: str
    attempts: int | None
    error: str | None
    result_summary: dict[str, Any] | None


#: The columns a batch writes, and which of them are times (UNIX seconds until written).
COLUMNS = (
    "message_id", "actor_name", "queue", "state", "progress", "attempts", "error", "result_summary",
    "enqueued_at", "started_at", "finished_at", "updated_at",
)  # fmt: skip
TIMES = ("enqueued_at", "started_at", "finished_at", "updated_at")


def merge(changes: Sequence[StateChange]) -> list[dict[str, Any]]:
    """One row per message: its last state, with what the earlier changes of the batch knew.
    Times stay UNIX seconds here; each dialect's writer converts them."""
    rows: dict[str, dict[str, Any]] = {}
    for change in changes:
        at = change.at
        row = rows.setdefault(
            change.message_id,
            {
                "message_id": change.message_id,
                "actor_name": change.actor_name,
                "queue": change.queue,
                "state": change.state,
                "progress": 0,
                "attempts": 0,
                "error": None,
                "result_summary": None,
                "enqueued_at": None,
                "started_at": None,
                "finished_at": None,
                "updated_at": at,
            },
        )
        row["state"] = change.state
        row["updated_at"] = at
        if change.attempts is not None:
            row["attempts"] = max(row["attempts"], change.attempts)
        if change.state == "running":
            row["started_at"], row["finished_at"], row["error"], row["progress"] = at, None, None, 0
        elif change.state == "enqueued":
            row["enqueued_at"] = row["enqueued_at"] or at
        else:
            row["finished_at"] = at
            row["error"] = change.error[:MAX_ERROR_CHARS] if change.error else None
            if change.state == "succeeded":
                row["progress"] = 100
                row["result_summary"] = change.result_summary
    return list(rows.values())


def apply_changes(engine: Engine, changes: Sequence[StateChange]) -> int:
    """Write a batch of state changes in one statement; return how many jobs were touched."""
    rows = merge(changes)
    if not rows:
        return 0
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            statement, parameters = _sqlite_parameters(rows)
            connection.exec_driver_sql(statement, parameters)
        else:
            for row in rows:
                for column in TIMES:
                    if row[column] is not None:
                        row[column] = datetime.fromtimestamp(row[column], UTC)
            # One parameter set per row: the statement compiles once per dialect and is cached,
            # and SQLAlchemy batches the rows into multi-row INSERTs itself ("insertmanyvalues").
            connection.execute(_upsert(engine.dialect.name), rows)
    return len(rows)


def _sqlite_parameters(rows: list[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
    """The SQLite upsert and its parameter tuples, values converted here as SQLAlchemy's column
    types would (times as UTC text, ``result_summary`` as JSON), but without its per-value
    processing, which cost a worker more than the write itself."""
    statement, names, constants = _sqlite_upsert()
    parameters = []
    for row in rows:
        for column in TIMES:
            at = row[column]
            if at is not None:
                # The text SQLAlchemy's SQLite DATETIME writes: UTC wall time to the microsecond.
                row[column] = (
                    datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
                )
        row["result_summary"] = orjson.dumps(row["result_summary"]).decode()
        parameters.append(tuple(row[name] if name in row else constants[name] for name in names))
    return statement, parameters


@functools.cache
def _sqlite_upsert() -> tuple[str, tuple[str, ...], dict[str, Any]]:
    compiled = _upsert("sqlite").compile(dialect=sqlite.dialect(), column_keys=list(COLUMNS))
    assert compiled.positiontup is not None
    return compiled.string, tuple(compiled.positiontup), dict(compiled.params)


@functools.cache
def _upsert(dialect: str) -> Any:
    insert = postgresql.insert(_jobs) if dialect == "postgresql" else sqlite.insert(_jobs)
    excluded = insert.excluded
    c = _jobs.c
    greatest = func.max if dialect == "sqlite" else func.greatest
    return insert.on_conflict_do_update(
        index_elements=["message_id"],
        set_={
            "state": excluded.state,
            "actor_name": func.coalesce(func.nullif(excluded.actor_name, ""), c.actor_name),
            "queue": func.coalesce(func.nullif(excluded.queue, ""), c.queue),
            "attempts": greatest(excluded.attempts, c.attempts),
            "progress": case(
                # A new attempt starts from 0, not at the percentage the previous attempt reached.
                # Unless the row changed since it started: that is this attempt's progress,
                # reported before its start was flushed.
                (and_(excluded.state == "running", c.updated_at <= excluded.started_at), excluded.progress),
                else_=greatest(excluded.progress, c.progress),
            ),
            "error": excluded.error,
            "result_summary": func.coalesce(excluded.result_summary, c.result_summary),
            "enqueued_at": func.coalesce(c.enqueued_at, excluded.enqueued_at),
            "started_at": func.coalesce(excluded.started_at, c.started_at),
            "finished_at": excluded.finished_at,
            "updated_at": excluded.updated_at,
        },
        where=c.state != "cancelled",
    )


class BatchJobRecorder:
    """The recorder ``brokers.setup`` hands to the job-state middleware."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def apply(self, updates: Sequence[Any]) -> None:
        apply_changes(self.engine, updates)
