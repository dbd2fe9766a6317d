"""Alembic environment of the edujobs database (run through ``store.migrate``)."""
