"""Engines and sessions: one place decides how edujobs connects to its database.

``make_engine`` tunes each backend: SQLite gets WAL (readers never wait for the writer), foreign
keys and a busy timeout (writers from several worker processes queue instead of failing at once),
and its directory is created; PostgreSQL connections that sat in the pool for a while are pinged
before use (``IDLE_PING_SECONDS``), so a restarted server costs no failed job. ``get_engine``
returns the engine of the configured ``EDUJOBS_DATABASE_URL``, one per URL per process.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from brokers.settings import get_settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 5.0


def make_engine(url: str, *, sync_each_commit: bool = True, **options: Any) -> Engine:
    """Create an engine for ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``).

    ``sync_each_commit=False`` is for writes that may be lost in a power cut or an OS crash (job
    state, which already accepts losing its last batch): SQLite then syncs its WAL at checkpoints
    rather than at every commit (``synchronous=NORMAL``; the database stays consistent either way).
    Each commit's fdatasync cost a busy worker more CPU than writing its rows. PostgreSQL is left
    as its server is configured."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory and not parsed.query.get("uri"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **options)
        event.listen(
            engine,
            "connect",
            functools.partial(_tune_sqlite, synchronous="FULL" if sync_each_commit else "NORMAL"),
        )
        return engine
    engine = create_engine(parsed, **options)
    if not options.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


@functools.lru_cache(maxsize=64)
def autocommit(engine: Engine) -> Engine:
    """``engine``'s pool, with every statement committed on its own: for work that is one atomic
    statement (an upsert, a conditional update, a read), which then costs one round trip to
    PostgreSQL instead of three (BEGIN, the statement, COMMIT or ROLLBACK)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, but only for connections idle ``IDLE_PING_SECONDS`` or more.

    ``pool_pre_ping`` costs a round trip per checkout: three of a notification's five. A connection
    that was in use a moment ago is alive, or the server went away since, which SQLAlchemy sees at
    the first statement: it invalidates the pool, and the job fails transiently and is retried. The
    connections that really go stale, those left in the pool while the server restarted, have been
    idle, and are pinged (and replaced, when the ping fails) before any statement uses them."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as e:
            # The pool drops this connection and checks out (or opens) another one.
            raise DisconnectionError(f"idle connection failed its ping: {e}") from e


def _tune_sqlite(dbapi_connection: Any, connection_record: Any, *, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
    finally:
        cursor.close()


@functools.cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    """The engine of the configured database (``EDUJOBS_DATABASE_URL``), created once per URL."""
    return _engine_for(get_settings().database_url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session in one transaction: committed if the block succeeds, rolled back if it raises."""
    with session_factory(engine or get_engine()).begin() as session:
        yield session
