"""The maintenance domain: cleanup, database backups, archival to cold storage."""

from actors.maintenance import actors  # noqa: F401  (declares the actors)
