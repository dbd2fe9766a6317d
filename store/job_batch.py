"""Batched job-state writes: many state changes, one INSERT ... ON CONFLICT DO UPDATE.

The job-state middleware hands over every change of the last fraction of a second at once; the
changes of one message are merged (the last state wins, the start time of its latest attempt is
kept) and all messages are written in one statement, so recording state costs a worker a few
microseconds per message instead of a transaction each. A new attempt's progress starts from 0.
A cancelled job is never overwritten.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import Dialect, Engine, Table, and_, case, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

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
    "enqueued_at", "started_at", "finished_at", "updated_at", "created_at",
)  # fmt: skip
TIMES = ("enqueued_at", "started_at", "finished_at", "updated_at", "created_at")


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
                "created_at": at,  # on insert only: the upsert's update leaves it
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
    writer = _writer_for(engine)
    with engine.begin() as connection:
        if writer is None:
            # Another driver: SQLAlchemy converts the values and batches the rows itself.
            for row in rows:
                for column in TIMES:
                    if row[column] is not None:
                        row[column] = datetime.fromtimestamp(row[column], UTC)
            connection.execute(_upsert(engine.dialect.name), rows)
        else:
            for statement, parameters in _statements(writer, rows):
                connection.exec_driver_sql(statement, parameters)
    return len(rows)


#: Rows per statement: 17 parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535.
ROWS_PER_STATEMENT = 250


def _sqlite_time(at: float) -> str:
    # The text SQLAlchemy's SQLite DATETIME writes: UTC wall time to the microsecond.
    return datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _aware_time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


@dataclass(frozen=True)
class _Writer:
    """How one driver takes the batch: the dialect to compile the upsert for (positional
    parameters) and how a time is passed."""

    dialect: Dialect
    time: Callable[[float], Any]


_WRITERS = {
    ("sqlite", "pysqlite"): _Writer(sqlite.dialect(), _sqlite_time),
    ("postgresql", "psycopg"): _Writer(PGDialect_psycopg(paramstyle="format"), _aware_time),  # type: ignore[no-untyped-call]
}


def _writer_for(engine: Engine) -> _Writer | None:
    """The one-statement writer of ``engine``'s driver, if it has one."""
    return _WRITERS.get((engine.dialect.name, engine.dialect.driver))


def _statements(writer: _Writer, rows: list[dict[str, Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Multi-row upserts of ``rows`` and their positional parameters.

    Values are converted here as SQLAlchemy's column types would (times as the driver takes them,
    ``result_summary`` as JSON text), without its per-value processing, which cost a worker more
    than the write itself. And many rows go in one statement rather than an ``executemany``:
    sqlite3 releases the GIL for every statement it steps, psycopg runs Python for every row it
    pipelines, and each GIL hand-over costs the busy worker threads a context switch."""
    _, names, constants = _compiled(writer)
    columns = names[: len(COLUMNS)]
    tail = tuple(constants[name] for name in names[len(COLUMNS) :])
    to_time = writer.time
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        parameters: list[Any] = []
        for row in chunk:
            for column in TIMES:
                at = row[column]
                if at is not None:
                    row[column] = to_time(at)
            # JSON null for no summary, as SQLAlchemy's JSON type writes None.
            row["result_summary"] = orjson.dumps(row["result_summary"]).decode()
            parameters.extend(row[name] for name in columns)
        parameters.extend(tail)
        yield _multi_row(writer, len(chunk)), tuple(parameters)


@functools.cache
def _compiled(writer: _Writer) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """SQLAlchemy's upsert for one row, compiled for ``writer``'s dialect: the statement, its
    parameters in order (the row's columns, then the constants of its ON CONFLICT clause), and the
    constants' values."""
    compiled = _upsert(writer.dialect.name).compile(dialect=writer.dialect, column_keys=list(COLUMNS))
    assert compiled.positiontup is not None
    names = tuple(compiled.positiontup)
    assert names[: len(COLUMNS)] == COLUMNS, names
    return compiled.string, names, dict(compiled.params)


@functools.cache
def _multi_row(writer: _Writer, rows: int) -> str:
    """The upsert for ``rows`` rows: the one-row statement with its VALUES group repeated."""
    statement = _compiled(writer)[0]
    head, found, rest = statement.partition("VALUES (")
    group, found_end, tail = rest.partition(") ON CONFLICT")
    assert found and found_end, statement
    values = ", ".join([f"({group})"] * rows)
    return f"{head}VALUES {values} ON CONFLICT{tail}"


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
        writer = _writer_for(self.engine)
        if writer is None:
            _upsert(self.engine.dialect.name)
        else:
            _multi_row(writer, ROWS_PER_STATEMENT)
        with self.engine.connect():
            pass
