"""Contracts of the maintenance domain: cleanup, backups, archival.

Every job that deletes or moves something takes ``dry_run``: true, it reports what it would remove
or archive (the same counts a real run returns) and changes nothing in the database or storage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.registry import Contract, register

DRY_RUN_DESCRIPTION = "Report what would be removed or archived; change nothing."


@register("maintenance.run_cleanup", queue="maintenance", priority="low")
class RunCleanup(Contract):
    """Delete what has outlived its use: old job records, delivery ledger entries, digested events,
    schedule fires, event handlers' processed-event records, expired reports (their files too), and
    the temporary files killed workers left."""

    job_days: int = Field(default=30, ge=1, le=3650, description="Finished job records kept this long.")
    delivery_days: int = Field(
        default=90, ge=1, le=3650, description="Completed ledger entries kept this long."
    )
    event_days: int = Field(default=30, ge=1, le=3650, description="Digested events kept this long.")
    fire_days: int = Field(default=180, ge=1, le=3650, description="Schedule fire records kept this long.")
    processed_event_days: int = Field(
        default=90,
        ge=15,
        le=3650,
        description="Event handlers' records of the events they applied (their once-per-event guard) "
        "kept this long: an event redelivered later would be applied again.",
    )
    dry_run: bool = Field(default=False, description=DRY_RUN_DESCRIPTION)


@register("maintenance.backup_database", queue="maintenance", priority="normal")
class BackupDatabase(Contract):
    """Back the database up into storage (pg_dump custom format, or SQLite's online backup) and
    delete backups older than ``keep_days`` (with ``dry_run``: no backup, only the count of those
    that would be deleted)."""

    keep_days: int = Field(default=30, ge=1, le=3650)
    dry_run: bool = Field(default=False, description=DRY_RUN_DESCRIPTION)


@register("maintenance.archive_old_data", queue="maintenance", priority="low")
class ArchiveOldData(Contract):
    """Move access logs, finished job records and completed deliveries older than ``days`` to
    storage (gzipped JSON lines, one file per table and run), then delete them from the database."""

    days: int = Field(default=365, ge=30, le=3650)
    batch_size: int = Field(default=5000, ge=100, le=100_000)
    dry_run: bool = Field(default=False, description=DRY_RUN_DESCRIPTION)


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
    dry_run: bool = Field(default=False, description=DRY_RUN_DESCRIPTION)


@register("maintenance.archive_audit_logs", queue="maintenance", priority="low")
class ArchiveAuditLogs(Contract):
    """Move the audit_logs rows older than the retention (EDUJOBS_AUDIT_RETENTION_DAYS, 7 years) to
    storage (gzipped JSON lines under audit-logs/<YYYY-MM>/, each file with a manifest: row count,
    id range, SHA-256), each file read back and checked before its rows are deleted."""

    retention_days: int | None = Field(
        default=None, ge=365, le=36500, description="Rows older than this go (default: the setting)."
    )
    batch_size: int = Field(default=5000, ge=100, le=100_000, description="Rows per archive file at most.")
    dry_run: bool = Field(default=False, description=DRY_RUN_DESCRIPTION)


@register("maintenance.clean_orphan_media", queue="maintenance", priority="low")
class CleanOrphanMedia(Contract):
    """Remove the files under media/<asset id>/ in storage whose media asset no longer exists and
    that are older than ``grace_hours``; reports the files and bytes removed and those left young."""

    grace_hours: float = Field(
        default=24.0, ge=1, le=24 * 90, description="Younger files are left (uploads in progress)."
    )
    dry_run: bool = Field(default=False, description=DRY_RUN_DESCRIPTION)
