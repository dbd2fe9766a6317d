"""The maintenance jobs' work: cleanup, database backups, archival of old rows to storage."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from actors.media.temp import sweep_stale_workdirs
from contracts.errors import PermanentError, TransientError
from store.models import AccessLog, Delivery, JobRecord, ProcessedEvent, Report
from store.models_notifications import DigestEvent
from store.models_schedules import ScheduleFire
from store.storage import ObjectNotFoundError, Storage

logger = logging.getLogger(__name__)

BACKUP_PREFIX = "backups/"
ARCHIVE_PREFIX = "archive/"
FINISHED_JOB_STATES = ("succeeded", "dead", "cancelled")
#: Media work directories and upload temporary files untouched this long were abandoned by a killed
#: process: far longer than any job runs (a video's time limit is 25 minutes), so none is in use.
STALE_TEMP_SECONDS = 12 * 3600


class BackupError(TransientError):
    """Raised when a backup program fails (retried: the database may be busy or restarting)."""


def run_cleanup(
    engine: Engine,
    storage: Storage,
    *,
    job_days: int = 30,
    delivery_days: int = 90,
    event_days: int = 30,
    fire_days: int = 180,
    processed_event_days: int = 90,
    now: datetime | None = None,
    media_temp_dir: str | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete what has outlived its use; returns how many rows (and report files) went. With
    ``dry_run``, returns how many would go and deletes nothing.

    Also sweeps the temporary files killed workers left (``sweep_stale_temp_files``): media work
    directories under ``media_temp_dir`` (by default as configured, ``EDUJOBS_MEDIA_TEMP_DIR``).
    """
    at = now or datetime.now(UTC)
    cleaned: tuple[tuple[str, Any, ColumnElement[bool]], ...] = (
        (
            "job_records",
            JobRecord,
            JobRecord.state.in_(FINISHED_JOB_STATES) & (JobRecord.updated_at < at - timedelta(days=job_days)),
        ),
        (
            "deliveries",
            Delivery,
            (Delivery.status != "pending") & (Delivery.completed_at < at - timedelta(days=delivery_days)),
        ),
        (
            "digest_events",
            DigestEvent,
            DigestEvent.digested_at.is_not(None)
            & (DigestEvent.digested_at < at - timedelta(days=event_days)),
        ),
        ("schedule_fires", ScheduleFire, ScheduleFire.fire_time < at - timedelta(days=fire_days)),
        # An event handler's record of the events it applied (its once-per-event-id guard): kept
        # far longer than a dead letter can wait to be requeued (EDUJOBS_DEAD_LETTER_TTL_DAYS).
        (
            "processed_events",
            ProcessedEvent,
            ProcessedEvent.processed_at < at - timedelta(days=processed_event_days),
        ),
    )
    counts: dict[str, int] = {}
    with engine.begin() as connection:
        for name, model, condition in cleaned:
            if dry_run:
                counts[name] = (
                    connection.scalar(select(func.count()).select_from(model).where(condition)) or 0
                )
            else:
                counts[name] = connection.execute(delete(model).where(condition)).rowcount
    counts["expired_reports"] = 0
    with Session(engine) as session:
        expired = session.scalars(
            select(Report).where(Report.status == "ready", Report.expires_at < at)
        ).all()
        for report in expired:
            counts["expired_reports"] += 1
            if dry_run:
                continue
            key = report.storage_key or storage_key(report.storage_uri)
            if key is not None:
                with contextlib.suppress(ObjectNotFoundError):  # deleted already
                    storage.delete(key)
            report.status = "expired"
            report.storage_uri = report.storage_key = None
        session.commit()
    if media_temp_dir is None:
        from brokers.settings import get_settings

        media_temp_dir = get_settings().media_temp_dir
    # File ages are wall-clock: ``now`` (which tests move) must not make fresh files look stale.
    counts |= sweep_stale_temp_files(storage, media_temp_dir, dry_run=dry_run)
    return counts


def sweep_stale_temp_files(
    storage: Storage,
    media_temp_dir: str | None,
    *,
    older_than_seconds: float = STALE_TEMP_SECONDS,
    dry_run: bool = False,
) -> dict[str, int]:
    """Remove the media work directories and the storage upload temporary files that a process
    killed outright (no ``finally`` ran) left behind; return how many of each went (with
    ``dry_run``, would go)."""
    at = time.time()
    counts = {
        "stale_media_workdirs": sweep_stale_workdirs(
            media_temp_dir, older_than_seconds=older_than_seconds, now=at, dry_run=dry_run
        ),
        "stale_upload_temp_files": storage.remove_stale_temp_files(
            older_than_seconds=older_than_seconds, now=at, dry_run=dry_run
        ),
    }
    if any(counts.values()) and not dry_run:
        logger.info(
            "Removed %d stale media work directories and %d abandoned upload temporary files.",
            counts["stale_media_workdirs"],
            counts["stale_upload_temp_files"],
        )
    return counts


def storage_key(uri: str | None) -> str | None:
    """The storage key in a report's ``storage_uri`` (``.../reports/...``)."""
    if not uri or "reports/" not in uri:
        return None
    return uri[uri.index("reports/") :]


# -- backups ------------------------------------------------------------------------------------------


def backup_database(
    engine: Engine,
    storage: Storage,
    *,
    keep_days: int = 30,
    now: datetime | None = None,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Back the database up into ``backups/<UTC date>/``; delete backups older than ``keep_days``.
    With ``dry_run``, neither: return how many backups would be pruned (and no key)."""
    at = now or datetime.now(UTC)
    if dry_run:
        return {
            "key": None,
            "bytes": 0,
            "pruned": prune_backups(storage, keep_days=keep_days, now=at, dry_run=True),
        }
    url = engine.url
    with tempfile.TemporaryDirectory(prefix="edujobs-backup-") as work:
        if url.get_backend_name() == "sqlite":
            path = Path(work) / "edujobs.sqlite3"
            _sqlite_backup(str(url.database), path)
        elif url.get_backend_name() == "postgresql":
            path = Path(work) / "edujobs.dump"
            _pg_dump(url.render_as_string(hide_password=False), path, run)
        else:
            raise PermanentError(f"cannot back up a {url.get_backend_name()} database")
        stem = Path(str(url.database or "db")).stem
        key = f"{BACKUP_PREFIX}{at:%Y-%m-%d}/{stem}-{at:%H%M%S}{path.suffix}"
        stored = storage.put_file(key, path)
    pruned = prune_backups(storage, keep_days=keep_days, now=at)
    logger.info("Backed the database up to %s (%d bytes); pruned %d old backups.", key, stored.size, pruned)
    return {"key": key, "bytes": stored.size, "pruned": pruned}


def _sqlite_backup(database: str, target: Path) -> None:
    # SQLite's online backup: a consistent copy while workers keep writing.
    source = sqlite3.connect(database)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def _pg_dump(url: str, target: Path, run: Callable[..., subprocess.CompletedProcess[bytes]]) -> None:
    parsed = make_url(url)
    env = {
        **os.environ,
        "PGHOST": parsed.host or "localhost",
        "PGPORT": str(parsed.port or 5432),
        "PGUSER": parsed.username or "",
        "PGDATABASE": parsed.database or "",
    }
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)  # never on the command line, where ps would show it
    try:
        done = run(
            ["pg_dump", "--format=custom", "--no-owner", f"--file={target}"],
            env=env,
            capture_output=True,
            timeout=3600,
            check=False,
        )
    except FileNotFoundError:
        raise PermanentError("pg_dump is not installed (Debian: postgresql-client)") from None
    except subprocess.TimeoutExpired:
        raise BackupError("pg_dump did not finish within an hour") from None
    if done.returncode != 0:
        raise BackupError(
            f"pg_dump failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
        )


def prune_backups(storage: Storage, *, keep_days: int, now: datetime, dry_run: bool = False) -> int:
    """Delete backups whose date folder is older than ``keep_days``; return how many files went
    (with ``dry_run``, would go)."""
    cutoff = (now - timedelta(days=keep_days)).date().isoformat()
    pruned = 0
    for key in storage.list(BACKUP_PREFIX):
        day = key[len(BACKUP_PREFIX) :].split("/", 1)[0]
        if len(day) == 10 and day < cutoff:
            if not dry_run:
                storage.delete(key)
            pruned += 1
    return pruned


# -- archival -----------------------------------------------------------------------------------------

ARCHIVED: tuple[tuple[str, Any, Callable[[datetime], Any]], ...] = (
    ("access_logs", AccessLog, lambda cutoff: AccessLog.at < cutoff),
    (
        "job_records",
        JobRecord,
        lambda cutoff: (JobRecord.updated_at < cutoff) & JobRecord.state.in_(FINISHED_JOB_STATES),
    ),
    (
        "deliveries",
        Delivery,
        lambda cutoff: (Delivery.completed_at < cutoff) & (Delivery.status != "pending"),
    ),
)


def archive_old_data(
    engine: Engine,
    storage: Storage,
    *,
    days: int = 365,
    batch_size: int = 5000,
    now: datetime | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Copy each table's rows older than ``days`` to ``archive/<table>/<date>/<table>-<n>.jsonl.gz``,
    then delete exactly those rows, batch by batch: a batch is deleted only once its file is stored,
    so a crash loses nothing (at worst a batch is archived twice). With ``dry_run``, count the rows
    and list the files it would write, changing nothing."""
    at = now or datetime.now(UTC)
    cutoff = at - timedelta(days=days)
    result: dict[str, Any] = {"cutoff": cutoff.isoformat(), "files": []}
    for name, model, older in ARCHIVED:
        table: Table = model.__table__
        key_column = next(iter(table.primary_key.columns))
        moved = 0
        part = 0
        if dry_run:
            with engine.connect() as connection:
                moved = connection.scalar(select(func.count()).select_from(table).where(older(cutoff))) or 0
            parts = -(-moved // batch_size)
            result["files"] += [_archive_key(name, at, part) for part in range(1, parts + 1)]
            result[name] = moved
            continue
        while True:
            with engine.connect() as connection:
                rows = (
                    connection.execute(
                        select(table).where(older(cutoff)).order_by(key_column).limit(batch_size)
                    )
                    .mappings()
                    .all()
                )
            if not rows:
                break
            part += 1
            lines = b"".join(json.dumps(dict(row), default=str).encode() + b"\n" for row in rows)
            key = _archive_key(name, at, part)
            storage.put_bytes(key, gzip.compress(lines), content_type="application/gzip")
            ids = [row[key_column.name] for row in rows]
            with engine.begin() as connection:
                connection.execute(delete(table).where(key_column.in_(ids)))
            moved += len(rows)
            result["files"].append(key)
        result[name] = moved
    return result


def _archive_key(table: str, at: datetime, part: int) -> str:
    return f"{ARCHIVE_PREFIX}{table}/{at:%Y-%m-%d}/{table}-{at:%H%M%S}-{part:05d}.jsonl.gz"
