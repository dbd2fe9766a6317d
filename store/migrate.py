"""Schema migrations, run from code: ``upgrade`` to a revision, ``current`` to see where a database is.

The Alembic environment lives in ``store/migrations``; no ``alembic.ini`` is needed at run time (the
one shipped in ``store/`` serves the alembic CLI during development).

Only ``upgrade`` creates tables. Every other entry point (the CLI's commands, the API, the
scheduler) calls ``check_migrated`` first and stops with ``NotMigratedError`` ("run `edujobs db
upgrade`"): a table made outside the migrations (APScheduler's job store creates its own when asked
to start) makes the migration that creates it fail later, and the database is stuck.
``upgrade`` also recovers a database an earlier edujobs left that way: never migrated, with only
``apscheduler_jobs`` in it (``_set_aside_orphans``).
"""

from __future__ import annotations

import functools
import importlib
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, inspect, text

from brokers.settings import get_settings
from contracts.errors import ConfigurationError
from store.db import make_engine
from store.models import Base

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Every module that declares models on ``Base``: a model outside these is invisible to Alembic's
# autogenerate and to the test that compares the migrated schema with the models.
MODEL_MODULES = (
    "store.models",
    "store.tokens",
    "store.models_notifications",
    "store.pauses",
    "store.models_schedules",
    "store.models_ledger",
    "store.workers",
    "store.models_analytics",
)


def target_metadata() -> MetaData:
    """The metadata of every edujobs model (what the migrations must create)."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return Base.metadata


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration for ``url`` (default: ``EDUJOBS_DATABASE_URL``) built in memory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url or get_settings().database_url
    return config


#: Tables created outside the migrations by earlier edujobs versions (APScheduler's job store, by
#: ``edujobs schedules`` on a new database), which ``upgrade`` sets aside, migrates, and copies back.
ORPHAN_TABLES = ("apscheduler_jobs",)
ASIDE_SUFFIX = "_before_migration"


class NotMigratedError(ConfigurationError):
    """Raised when the database lacks migrations this edujobs needs (never migrated, or behind)."""


def upgrade(url: str | None = None, revision: str = "heads") -> None:
    """Migrate the database at ``url`` (default: the configured one) up to ``revision``."""
    config = alembic_config(url)
    engine = make_engine(config.attributes["url"])
    try:
        _set_aside_orphans(engine)
        logger.info("Migrating the database to %s.", revision)
        command.upgrade(config, revision)
        _restore_orphans(engine)
    finally:
        engine.dispose()


def _set_aside_orphans(engine: Engine) -> None:
    """On a database never migrated, rename each of ``ORPHAN_TABLES`` found there out of the
    migrations' way (its indexes dropped: index names are per database), rows kept."""
    if _current_of(engine):
        return
    with engine.begin() as connection:
        present = set(inspect(connection).get_table_names())
        for name in ORPHAN_TABLES:
            if name not in present or name + ASIDE_SUFFIX in present:
                continue
            table = Table(name, MetaData(), autoload_with=connection)
            for index in table.indexes:
                index.drop(connection)
            connection.execute(text(f"ALTER TABLE {name} RENAME TO {name}{ASIDE_SUFFIX}"))
            logger.warning("Found %s made before any migration; set aside as %s%s.", name, name, ASIDE_SUFFIX)


def _restore_orphans(engine: Engine) -> None:
    """Copy the rows of each table ``_set_aside_orphans`` renamed (by this run, or by one whose
    migration failed) into the migrated table, and drop it."""
    with engine.begin() as connection:
        present = set(inspect(connection).get_table_names())
        for name in ORPHAN_TABLES:
            aside = name + ASIDE_SUFFIX
            if aside not in present or name not in present:
                continue
            columns = ", ".join(column["name"] for column in inspect(connection).get_columns(name))
            connection.execute(text(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {aside}"))
            connection.execute(text(f"DROP TABLE {aside}"))
            logger.warning("Copied the rows of %s back into the migrated %s.", aside, name)


def check_migrated(engine: Engine) -> None:
    """Raise ``NotMigratedError`` (one line, saying to run ``edujobs db upgrade``) unless the
    database has every migration of this edujobs. A revision this code does not know passes: a
    newer edujobs migrated it (during a rolling upgrade), and the tables this code uses are there."""
    at, latest = _current_of(engine), heads()
    if set(latest) <= set(at) or not set(at) <= _known_revisions():
        return
    where = ", ".join(at) or "nothing"
    raise NotMigratedError(
        f"the database {engine.url.render_as_string(hide_password=True)} is not migrated "
        f"(at {where}, latest {', '.join(latest)}): run `edujobs db upgrade`"
    )


def _current_of(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as connection:
        return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def current(url: str | None = None) -> tuple[str, ...]:
    """The revisions the database at ``url`` is at (sorted), or () if it was never migrated."""
    engine = make_engine(url or get_settings().database_url)
    try:
        return _current_of(engine)
    finally:
        engine.dispose()


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def heads() -> tuple[str, ...]:
    """The newest revisions (sorted) that ``upgrade`` migrates to: one, unless branches await a merge."""
    return tuple(sorted(_scripts().get_heads()))


def _known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}
