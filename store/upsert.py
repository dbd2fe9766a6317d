"""INSERT ... ON CONFLICT for the two databases edujobs runs on, behind one function each.

Both PostgreSQL and SQLite resolve the conflict inside the database, so two processes inserting
the same key at the same moment cannot both win, and neither sees an error.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, text
from sqlalchemy.dialects import postgresql, sqlite


def _insert(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    return _insert_for(connection.dialect.name, table)


def _insert_for(name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"edujobs supports PostgreSQL and SQLite, not {name}")


def insert_if_absent(
    connection: Connection,
    table: Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
    index_where: str | None = None,
) -> bool:
    """Insert a row unless one with the same ``keys`` exists; True if this call inserted it.
    ``index_where``: the predicate of the partial unique index on ``keys`` (SQL text)."""
    statement = _insert_if_absent(connection.dialect.name, table, tuple(keys), index_where)
    # The values go as parameters of one statement built once, rather than into a new statement
    # each call, which SQLAlchemy would have to build and derive a cache key for every time.
    return connection.execute(statement, dict(values)).first() is not None


@functools.lru_cache(maxsize=64)
def _insert_if_absent(dialect: str, table: Table, keys: tuple[str, ...], index_where: str | None) -> Any:
    insert = _insert_for(dialect, table)
    where = None if index_where is None else text(index_where)
    # RETURNING, not rowcount: psycopg reports rowcount -1 for INSERT ... ON CONFLICT here.
    return insert.on_conflict_do_nothing(index_elements=list(keys), index_where=where).returning(
        table.c[keys[0]]
    )


def insert_many_if_absent(
    connection: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    index_where: str | None = None,
) -> list[Any]:
    """``insert_if_absent`` for many rows in one statement (SQLAlchemy's "insert many values"):
    the ``keys[0]`` of each row this call inserted, in no particular order."""
    if not rows:
        return []
    statement = _insert_if_absent(connection.dialect.name, table, tuple(keys), index_where)
    return list(connection.execute(statement, [dict(row) for row in rows]).scalars())


def upsert(
    connection: Connection,
    table: Table,
    values: Mapping[str, Any],
    *,
    keys: Sequence[str],
    update: Mapping[str, Any],
    where: ColumnElement[bool] | None = None,
) -> bool:
    """Insert a row, or apply ``update`` to the existing one (only if ``where`` holds for it).

    ``update`` values may be SQL expressions over the table's columns. True if a row was written.
    """
    statement = (
        _insert(connection, table)
        .values(dict(values))
        .on_conflict_do_update(index_elements=keys, set_=dict(update), where=where)
    )
    return connection.execute(statement.returning(table.c[keys[0]])).first() is not None
