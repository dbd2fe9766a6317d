"""Batched job-state writes: many state changes, one INSERT ... ON CONFLICT DO UPDATE.

The job-state middleware hands over every change of the last fraction of a second at once; the
changes of one message are merged (the last state wins, the start time of its latest attempt is
kept) and all messages are written in one statement, so recording state costs a worker a few
microseconds per message instead of a transaction each. A new attempt's progress starts from 0.
A cancelled job is never overwritten.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
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
            for statement, parameters in _sqlite_statements(rows):
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


#: Rows per SQLite statement: 13 parameters each, well under SQLite's 32,766.
SQLITE_ROWS_PER_STATEMENT = 250


def _sqlite_statements(rows: list[dict[str, Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Multi-row SQLite upserts of ``rows`` and their parameters.

    Values are converted here as SQLAlchemy's column types would (times as UTC text,
    ``result_summary`` as JSON), without its per-value processing, which cost a worker more than
    the write itself. And many rows go in one statement rather than an ``executemany``: sqlite3
    releases the GIL for every statement it steps, and each time the flushing thread then waits
    to take it back from the worker threads, a context switch per row."""
    _, names, constants = _sqlite_compiled()
    columns = names[: len(COLUMNS)]
    tail = tuple(constants[name] for name in names[len(COLUMNS) :])
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start : start + SQLITE_ROWS_PER_STATEMENT]
        parameters: list[Any] = []
        for row in chunk:
            for column in TIMES:
                at = row[column]
                if at is not None:
                    # The text SQLAlchemy's SQLite DATETIME writes: UTC wall time to the microsecond.
                    row[column] = (
                        datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
                    )
            row["result_summary"] = orjson.dumps(row["result_summary"]).decode()
            parameters.extend(row[name] for name in columns)
        parameters.extend(tail)
        yield _sqlite_upsert(len(chunk)), tuple(parameters)


@functools.cache
def _sqlite_compiled() -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """SQLAlchemy's SQLite upsert for one row, its parameters in order (the row's columns, then the
    constants of its ON CONFLICT clause), and the constants' values."""
    compiled = _upsert("sqlite").compile(dialect=sqlite.dialect(), column_keys=list(COLUMNS))
    assert compiled.positiontup is not None
    names = tuple(compiled.positiontup)
    assert names[: len(COLUMNS)] == COLUMNS, names
    return compiled.string, names, dict(compiled.params)


@functools.cache
def _sqlite_upsert(rows: int) -> str:
    """The SQLite upsert for ``rows`` rows: the one-row statement with its VALUES group repeated."""
    statement = _sqlite_compiled()[0]
    group = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    head, found, tail = statement.partition(f"VALUES {group}")
    assert found, statement
    return f"{head}VALUES {', '.join([group] * rows)}{tail}"


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

    def prepare(self) -> None:
        """Build the statements and open a pooled connection now (at worker boot), not during
        the first batch."""
        if self.engine.dialect.name == "sqlite":
            _sqlite_upsert(SQLITE_ROWS_PER_STATEMENT)
        else:
            _upsert(self.engine.dialect.name)
        with self.engine.connect():
            pass
