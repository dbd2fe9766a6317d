"""Contracts of the maintenance domain: cleanup, backups, archival."""

from __future__ import annotations

from typing import Literal

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


#: The domain queues (``brokers.topology.DOMAIN_QUEUES``, which contracts cannot import).
DomainQueue = Literal["notifications", "media", "reports", "academics", "maintenance"]


@register("maintenance.archive_dead_letters", queue="maintenance", priority="low")
class ArchiveDeadLetters(Contract):
    """Move the dead letters about to expire (older than EDUJOBS_DEAD_LETTER_TTL_DAYS less
    EDUJOBS_DEAD_LETTER_ARCHIVE_MARGIN_DAYS) from each queue's Q.XQ to storage (gzipped JSON lines
    under dead-letters/<queue>/<day>/), written before they are removed."""

    queues: list[DomainQueue] | None = Field(
        default=None, max_length=5, description="Only these queues (default: all)."
    )
