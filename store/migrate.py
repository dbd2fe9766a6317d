"""Schema migrations, run from code: ``upgrade`` to a revision, ``current`` to see where a database is.

The Alembic environment lives in ``store/migrations``; no ``alembic.ini`` is needed at run time (the
one shipped in ``store/`` serves the alembic CLI during development).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData

from brokers.settings import get_settings
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


def upgrade(url: str | None = None, revision: str = "heads") -> None:
    """Migrate the database at ``url`` (default: the configured one) up to ``revision``."""
    config = alembic_config(url)
    logger.info("Migrating the database to %s.", revision)
    command.upgrade(config, revision)


def current(url: str | None = None) -> tuple[str, ...]:
    """The revisions the database at ``url`` is at (sorted), or () if it was never migrated."""
    engine = make_engine(url or get_settings().database_url)
    try:
        with engine.connect() as connection:
            return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
    finally:
        engine.dispose()


def heads() -> tuple[str, ...]:
    """The newest revisions (sorted) that ``upgrade`` migrates to: one, unless branches await a merge."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()))
