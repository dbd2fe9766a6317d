"""Alembic's entry point: migrate the database that ``store.migrate`` (or the alembic CLI) names.

The URL comes from, in order: a connection handed over in ``config.attributes["connection"]``,
``config.attributes["url"]``, the ``sqlalchemy.url`` option, then ``EDUJOBS_DATABASE_URL``. SQLite
migrations run in batch mode, since SQLite cannot alter most of a table in place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from brokers.settings import get_settings
from store.db import make_engine
from store.migrate import target_metadata as all_models

config = context.config
target_metadata = all_models()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database_url
    )
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database_url
    )
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
