"""What an analytics report is made of: sections of typed columns, each one SQL query.

A report (``ReportSpec``) has a one-row ``summary`` query and a few ``Section`` s (a table each:
a sheet in the XLSX, a block in the CSV, a key in the JSON, a table in the PDF). Every figure is
computed by the database (SQLAlchemy Core, the same statements on PostgreSQL and SQLite); Python
only rounds and formats (``cells``). ``period`` groups timestamps by day, ISO week (its Monday) or
month with the same text on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Select, cast, func
from sqlalchemy.sql.elements import ColumnElement

#: Column kinds: how a value is rounded, formatted in the XLSX and aligned in the PDF.
KINDS = ("int", "float", "pct", "money", "text")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "int"


@dataclass(frozen=True)
class Section:
    """One table of a report. ``chart`` = (label column, value column): drawn as a bar chart in the
    PDF. ``estimate``: a cheap count of its rows, for progress (None: a small section)."""

    name: str
    title: str
    columns: tuple[Column, ...]
    query: Select[*tuple[Any, ...]]
    chart: tuple[str, str] | None = None
    estimate: Select[*tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class ReportSpec:
    type: str
    title: str
    summary_columns: tuple[Column, ...]
    summary: Select[*tuple[Any, ...]]
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class Period:
    """The report's period as UTC instants: ``start`` included, ``end`` (the day after) excluded."""

    start_date: date
    end_date: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.start_date, time(0), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.end_date + timedelta(days=1), time(0), UTC)


def period(column: Any, grouping: str, dialect: str, *, is_date: bool = False) -> ColumnElement[str]:
    """``column`` (a UTC timestamp, or a date) as its day ``YYYY-MM-DD``, week (the Monday,
    ``YYYY-MM-DD``) or month ``YYYY-MM``, the same text on PostgreSQL and SQLite."""
    if dialect == "postgresql":
        utc = cast(column, DateTime()) if is_date else func.timezone("UTC", column)
        if grouping == "week":
            return func.to_char(func.date_trunc("week", utc), "YYYY-MM-DD")
        return func.to_char(utc, "YYYY-MM" if grouping == "month" else "YYYY-MM-DD")
    if grouping == "week":
        return func.date(column, "weekday 0", "-6 days")
    return func.strftime("%Y-%m" if grouping == "month" else "%Y-%m-%d", column)


def cell(value: Any, kind: str) -> Any:
    """A database value as the report shows it: ints, floats rounded to 2 places, text; None stays."""
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "text":
        return str(value)
    if isinstance(value, Decimal):
        value = float(value)
    return round(float(value), 2)


def cells(row: Sequence[Any], columns: Sequence[Column]) -> list[Any]:
    return [cell(value, column.kind) for value, column in zip(row, columns, strict=True)]
