"""What edujobs remembers: SQLAlchemy models, repositories and Alembic migrations.

``store.db`` builds engines and sessions, ``store.models`` declares the schema, ``store.migrate``
applies the migrations in ``store/migrations``; the repositories are ``store.ledger`` (side effects
that must happen once), ``store.jobs`` (job state), ``store.audit`` (operator actions) and
``store.seed`` (demo data). Nothing here imports dramatiq or any actor.
"""
