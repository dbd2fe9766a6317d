"""Alembic revisions, one module each, applied in order by ``store.migrate.upgrade``."""
