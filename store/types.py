"""Column types shared by the models: UTC timestamps that stay aware on every database, and JSON.

SQLite has no time zone type: ``UTCDateTime`` stores UTC there and hands back aware datetimes, so
the rest of edujobs sees the same values on SQLite and PostgreSQL. A naive datetime is refused
rather than guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC, always returned aware in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: edujobs stores aware datetimes only (use UTC)")
        value = value.astimezone(UTC)
        # SQLite drops the offset when it formats the value: hand it UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (compact, comparable, indexable), JSON text elsewhere.
JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")

# 64-bit keys for tables that grow without bound; SQLite only auto-increments INTEGER keys.
BigIntId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
