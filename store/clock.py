"""The database's clock, as SQL: one clock for every worker, whatever their own say.

A claim is judged by how old it is and by how long ago its owner last showed signs of life. Workers'
clocks drift apart (an NTP step, a paused VM, a container host off by a minute); if each wrote and
compared its own time, one fast clock would take over claims that are seconds old, and one slow
clock would wait past a lease. So timestamps that are compared are written as the database's
``now`` and compared with it, inside the statement: no worker's clock is involved.

PostgreSQL: ``now()`` (in autocommit, the statement's start). SQLite: ``strftime(..., 'now')``, UTC
with milliseconds, written in the layout SQLAlchemy uses for datetimes there, so the column reads
back as any other. (SQLite's database is one machine's file: its clock is that machine's.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, literal_column
from sqlalchemy.sql.functions import Function

# %f is "SS.SSS": three zeros make SQLAlchemy's six digits of microseconds.
_SQLITE_NOW = "%Y-%m-%d %H:%M:%f000"


def db_now(dialect: str) -> ColumnElement[datetime]:
    """The database's current time, as an expression to write into a timestamp column."""
    if dialect == "postgresql":
        return func.now()
    if dialect == "sqlite":
        now: Function[Any] = func.strftime(_SQLITE_NOW, "now")
        return now
    raise NotImplementedError(f"edujobs supports PostgreSQL and SQLite, not {dialect}")


def seconds_since(column: ColumnElement[Any], dialect: str) -> ColumnElement[float]:
    """How many seconds ago ``column`` was, by the database's clock (NULL when it is NULL)."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", func.now() - column), Float)
    if dialect == "sqlite":
        days = func.julianday(literal_column("'now'")) - func.julianday(column)
        return cast(days * 86_400.0, Float)
    raise NotImplementedError(f"edujobs supports PostgreSQL and SQLite, not {dialect}")
