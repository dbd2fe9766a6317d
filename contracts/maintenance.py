"""Contracts of the maintenance domain: cleanup, backups, archival."""

from __future__ import annotations

from pydantic import Field

from contracts.registry import Contract, register


@register("maintenance.run_cleanup", queue="maintenance", priority="low")
class RunCleanup(Contract):
    """Delete what has outlived its use: old job records, delivery ledger entries, digested events,
    schedule fires, and expired reports (their files too)."""

    job_days: int = Field(default=30, ge=1, le=3650, description="Finished job records kept this long.")
    delivery_days: int = Field(
        default=90, ge=1, le=3650, description="Completed ledger entries kept this long."
    )
    event_days: int = Field(default=30, ge=1, le=3650, description="Digested events kept this long.")
    fire_days: int = Field(default=180, ge=1, le=3650, description="Schedule fire records kept this long.")


@register("maintenance.backup_database", queue="maintenance", priority="normal")
class BackupDatabase(Contract):
    """Back the database up into storage (pg_dump custom format, or SQLite's online backup) and
    delete backups older than ``keep_days``."""

    keep_days: int = Field(default=30, ge=1, le=3650)


@register("maintenance.archive_old_data", queue="maintenance", priority="low")
class ArchiveOldData(Contract):
    """Move access logs, finished job records and completed deliveries older than ``days`` to
    storage (gzipped JSON lines, one file per table and run), then delete them from the database."""

    days: int = Field(default=365, ge=30, le=3650)
    batch_size: int = Field(default=5000, ge=100, le=100_000)
