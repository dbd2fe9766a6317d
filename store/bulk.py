"""Bulk loading of rows into a table: COPY on PostgreSQL, chunked executemany INSERTs elsewhere.

Measured on the 2-core development machine: SQLAlchemy Core ``insert()`` with lists of dicts
(psycopg's pipelined executemany) loads about 25,000 rows/s into PostgreSQL, psycopg's COPY about
150,000 to 200,000. Demo data of 100,000 students is some ten million rows, so PostgreSQL gets
COPY; SQLite gets Core ``insert()`` in chunks, which is as fast as SQLite goes. Rows are tuples in
the order of ``columns``; values are what the models hold (aware datetimes, lists and dicts for
JSON); column defaults of the models are NOT applied on PostgreSQL (only server defaults are), so
give every NOT NULL column without a server default.

``defer_indexes=True`` suits a large load into an empty table: its secondary indexes (and, on
PostgreSQL, its foreign keys, whose per-row checks cost more than the insert itself) are dropped
for the load and rebuilt after it in one pass each, within the same transaction, so a failure
leaves the schema as it was.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any, cast

import psycopg
from psycopg import sql
from sqlalchemy import JSON, Connection, Date, DateTime, Table, insert
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex
from sqlalchemy.types import TypeEngine

CHUNK_ROWS = 5_000


def load_rows(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    defer_indexes: bool = False,
) -> int:
    """Write ``rows`` into ``table`` within the connection's transaction; return how many."""
    load = _copy if connection.dialect.name == "postgresql" else _insert
    if not defer_indexes:
        return load(connection, table, columns, rows)
    with _indexes_deferred(connection, table):
        return load(connection, table, columns, rows)


@contextmanager
def _indexes_deferred(connection: Connection, table: Table) -> Iterator[None]:
    indexes = sorted(table.indexes, key=lambda index: str(index.name))
    foreign_keys = (
        sorted(table.foreign_key_constraints, key=lambda fk: str(fk.name))
        if connection.dialect.name == "postgresql"
        else []
    )
    for index in indexes:
        connection.execute(DropIndex(index))
    for foreign_key in foreign_keys:
        connection.execute(DropConstraint(foreign_key))
    yield
    for index in indexes:
        connection.execute(CreateIndex(index))
    for foreign_key in foreign_keys:
        connection.execute(AddConstraint(foreign_key))


def _insert(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    statement = insert(table)
    count = 0
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
        connection.execute(statement, [dict(zip(columns, row, strict=True)) for row in chunk])
        count += len(chunk)
    return count


def _copy(connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    converters = [(i, _text_converter(table.c[name].type)) for i, name in enumerate(columns)]
    converting = [(i, convert) for i, convert in converters if convert is not None]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    )
    raw = cast(psycopg.Connection[Any], connection.connection.driver_connection)
    count = 0
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            if converting:
                row = list(row)
                for i, convert in converting:
                    row[i] = convert(row[i])
            copy.write_row(row)
            count += 1
    return count


def _text_converter(column_type: TypeEngine[Any]) -> Callable[[Any], Any] | None:
    if isinstance(column_type, JSON):
        return json.dumps
    if isinstance(column_type, Date | DateTime) or isinstance(getattr(column_type, "impl", None), DateTime):
        # Dumping a date costs psycopg more than the rest of a row; bulk rows repeat few dates.
        return functools.lru_cache(maxsize=4096)(_isoformat)
    return None


def _isoformat(value: date | None) -> str | None:
    # datetime is a date too; an aware one keeps its offset ("+00:00"), which timestamptz reads.
    return None if value is None else value.isoformat()
