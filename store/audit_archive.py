"""The audit-log archive: ``audit_logs`` rows past their retention, moved to storage, never lost.

The audit trail is kept ``EDUJOBS_AUDIT_RETENTION_DAYS`` (2557 days: seven years, leap days
included) in the database; ``maintenance.archive_audit_logs`` then moves older rows to storage
(``store.storage``), batch by batch, oldest ids first. Keys::

    audit-logs/<YYYY-MM>/audit-logs-<first id, 12 digits>.jsonl.gz        the rows
    audit-logs/<YYYY-MM>/audit-logs-<first id, 12 digits>.manifest.json   what that file holds

The month is the one of the file's first row (UTC). A data file is gzipped JSON lines, one row per
line in id order: ``{"id", "at" (ISO 8601, UTC), "actor", "action", "target", "details"}``. Its
manifest says how many rows (``rows``), their id and time range, the cutoff of the run, the file's
size and SHA-256, and its ``state``: ``archived`` (the file is verified, the rows may still be in the
table) or ``deleted`` (the rows left the table). Only files with a manifest are part of the archive:
``read`` and ``restore`` ignore a data file without one (a run stopped before it wrote it).

One batch, each step only once the one before it is durable:

1. the rows are streamed from the database into a local gzip file (``yield_per``: memory is bounded
   by the batch's file on disk, never by the table);
2. the file is uploaded under a key that depends only on its first row's id;
3. it is read back from storage: its SHA-256 and its line count must be what was written, else
   nothing is deleted (``AuditArchiveError``, retried);
4. its manifest is written, ``archived``;
5. its rows are deleted, in one transaction: ``id`` between the first and last archived and ``at``
   before the cutoff, which are exactly the archived rows; the count must be the manifest's (or 0:
   another run deleted them already), else the transaction is rolled back;
6. the manifest is rewritten, ``deleted``.

A run stopped anywhere loses and duplicates nothing: stopped before 4, the rows are still in the
table, and the next run selects the same first row, so it writes the same key again (replacing the
file, not adding one); stopped between 4 and 6, the next run first finishes every ``archived``
manifest (checks its file again, deletes its rows, finding none if the deletion had committed, and
marks it ``deleted``) before it selects new rows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import ColumnElement, Engine, Table, and_, delete, func, insert, select

from contracts.errors import PermanentError, TransientError
from store.models import AuditLog
from store.storage import CHUNK, ObjectNotFoundError, Storage

logger = logging.getLogger(__name__)

PREFIX = "audit-logs/"
DATA_SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".manifest.json"
FORMAT = 1
#: Rows per archive file at most (the default of the job's ``batch_size``).
BATCH = 5000
#: Rows fetched from the database at a time while a batch is streamed to its file.
FETCH = 1000

_TABLE: Table = AuditLog.__table__  # type: ignore[assignment]
_COLUMNS = ("id", "at", "actor", "action", "target", "details")


class AuditArchiveError(TransientError):
    """Raised when an archive file does not read back as written (nothing was deleted; retried)."""


class AuditArchiveConflictError(PermanentError):
    """Raised when the rows to delete are not the ones archived (rolled back: an operator looks)."""


@dataclass
class Manifest:
    """What one archive file holds, and whether its rows have left the table."""

    key: str
    rows: int
    first_id: int
    last_id: int
    first_at: str
    last_at: str
    cutoff: str
    sha256: str
    size: int  # bytes of the gzipped file
    archived_at: str
    state: str = "archived"
    deleted_at: str | None = None
    format: int = FORMAT

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)

    def dump(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, data: bytes) -> Manifest:
        values = json.loads(data)
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


@dataclass
class RunResult:
    """What one run did (or, dry, would do)."""

    cutoff: str
    dry_run: bool = False
    archived: int = 0  # rows written to archive files and deleted from the table
    deleted: int = 0  # rows deleted from the table (this run's and those of interrupted runs)
    recovered: int = 0  # manifests left ``archived`` by an interrupted run, finished by this one
    bytes: int = 0
    files: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff,
            "dry_run": self.dry_run,
            "archived": self.archived,
            "deleted": self.deleted,
            "recovered": self.recovered,
            "bytes": self.bytes,
            "files": len(self.files),
        }


def data_key(first_id: int, first_at: datetime) -> str:
    return f"{PREFIX}{first_at.astimezone(UTC):%Y-%m}/audit-logs-{first_id:012d}{DATA_SUFFIX}"


def manifest_key(key: str) -> str:
    return key.removesuffix(DATA_SUFFIX) + MANIFEST_SUFFIX


def archive_audit_logs(
    engine: Engine,
    storage: Storage,
    *,
    retention_days: int,
    batch_size: int = BATCH,
    dry_run: bool = False,
    now: datetime | None = None,
    after_archive: Callable[[Manifest], None] | None = None,
) -> RunResult:
    """Move the audit rows older than ``retention_days`` to storage, then delete them, batch by
    batch (module docstring). With ``dry_run``, count the rows and files it would move and change
    nothing. ``after_archive`` is called between a batch's manifest and its deletion (tests stop a
    run there)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    result = RunResult(cutoff=cutoff.isoformat(), dry_run=dry_run)
    pending = pending_manifests(storage)
    for interrupted in pending:
        # An interrupted run's batch: archived, maybe deleted. Its rows count as archived once.
        if dry_run:
            result.recovered += 1
            result.deleted += _count_range(engine, interrupted)
            continue
        result.deleted += _delete_archived(engine, storage, interrupted)
        result.recovered += 1
    if dry_run:
        _plan(engine, result, cutoff, batch_size, pending)
        return result
    while (manifest := _archive_batch(engine, storage, cutoff, batch_size)) is not None:
        result.archived += manifest.rows
        result.bytes += manifest.size
        result.files.append(manifest.key)
        if after_archive is not None:
            after_archive(manifest)
        result.deleted += _delete_archived(engine, storage, manifest)
    if result.archived or result.recovered:
        logger.info(
            "Archived %d audit rows older than %s to %d files (%d bytes); finished %d interrupted batches.",
            result.archived,
            result.cutoff,
            len(result.files),
            result.bytes,
            result.recovered,
        )
    return result


def _plan(
    engine: Engine, result: RunResult, cutoff: datetime, batch_size: int, pending: list[Manifest]
) -> None:
    """What a real run would archive: the rows before the cutoff, in files of ``batch_size``,
    less those of interrupted runs' batches (which it would finish instead)."""
    older = and_(AuditLog.at < cutoff, *(~_archived_rows(manifest) for manifest in pending))
    with engine.connect() as connection:
        rows = connection.execute(select(func.count()).select_from(_TABLE).where(older))
        total = int(rows.scalar_one())
        # The first id and time of each file: every batch_size-th row, in id order.
        starts = (
            select(AuditLog.id, AuditLog.at)
            .where(older)
            .order_by(AuditLog.id)
            .execution_options(yield_per=FETCH)
        )
        for index, row in enumerate(connection.execute(starts)):
            if index % batch_size == 0:
                result.files.append(data_key(row.id, row.at))
    result.archived = total
    result.deleted += total


def _archive_batch(engine: Engine, storage: Storage, cutoff: datetime, batch_size: int) -> Manifest | None:
    """Steps 1 to 4 for the next batch; None when no row is older than the cutoff."""
    statement = (
        select(_TABLE).where(AuditLog.at < cutoff).order_by(AuditLog.id).limit(batch_size)
    ).execution_options(yield_per=FETCH)
    with tempfile.TemporaryDirectory(prefix="edujobs-audit-") as work:
        path = Path(work) / "batch.jsonl.gz"
        count, first, last = 0, None, None
        with engine.connect() as connection, path.open("wb") as raw:
            # mtime=0: the same rows make the same bytes, so a replaced file has the same checksum.
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as lines:
                for row in connection.execute(statement).mappings():
                    lines.write(_line(row))
                    count += 1
                    first = first or (row["id"], row["at"])
                    last = (row["id"], row["at"])
            raw.flush()
            os.fsync(raw.fileno())
        if first is None or last is None:
            return None
        digest, size = _sha256_of(path)
        key = data_key(first[0], first[1])
        storage.put_file(key, path, content_type="application/gzip")
    manifest = Manifest(
        key=key,
        rows=count,
        first_id=int(first[0]),
        last_id=int(last[0]),
        first_at=first[1].isoformat(),
        last_at=last[1].isoformat(),
        cutoff=cutoff.isoformat(),
        sha256=digest,
        size=size,
        archived_at=datetime.now(UTC).isoformat(),
    )
    verify(storage, manifest)
    storage.put_bytes(manifest.manifest_key, manifest.dump(), content_type="application/json")
    return manifest


def _line(row: Any) -> bytes:
    data = {name: row[name] for name in _COLUMNS}
    data["at"] = row["at"].astimezone(UTC).isoformat()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


def _sha256_of(path: Path) -> tuple[str, int]:
    with path.open("rb") as source:
        return _digest(source)


def _digest(source: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def verify(storage: Storage, manifest: Manifest) -> None:
    """Read the archive file back from storage: its checksum, size and row count must be the
    manifest's, else ``AuditArchiveError``."""
    try:
        with storage.open(manifest.key) as source:
            digest, size = _digest(source)
        with storage.open(manifest.key) as source, gzip.open(source, "rb") as lines:
            rows = sum(1 for _ in lines)
    except ObjectNotFoundError:
        raise AuditArchiveError(f"the audit archive file {manifest.key} is missing") from None
    except (OSError, EOFError) as e:
        raise AuditArchiveError(f"the audit archive file {manifest.key} is unreadable: {e}") from None
    if (digest, size, rows) != (manifest.sha256, manifest.size, manifest.rows):
        raise AuditArchiveError(
            f"the audit archive file {manifest.key} does not read back as written: {rows} rows, "
            f"{size} bytes, SHA-256 {digest} (expected {manifest.rows}, {manifest.size}, {manifest.sha256})"
        )


def _archived_rows(manifest: Manifest) -> ColumnElement[bool]:
    return (
        (AuditLog.id >= manifest.first_id)
        & (AuditLog.id <= manifest.last_id)
        & (AuditLog.at < datetime.fromisoformat(manifest.cutoff))
    )


def _count_range(engine: Engine, manifest: Manifest) -> int:
    with engine.connect() as connection:
        found = connection.execute(select(func.count()).select_from(_TABLE).where(_archived_rows(manifest)))
        return int(found.scalar_one())


def _delete_archived(engine: Engine, storage: Storage, manifest: Manifest) -> int:
    """Steps 5 and 6: delete the manifest's rows (checking the file first when its run was
    interrupted), then mark it ``deleted``; return how many rows this deleted."""
    if manifest.state != "archived":
        return 0
    verify(storage, manifest)
    with engine.begin() as connection:
        deleted = connection.execute(delete(_TABLE).where(_archived_rows(manifest))).rowcount
        if deleted not in (manifest.rows, 0):
            # Not the archived rows: raising rolls the deletion back.
            raise AuditArchiveConflictError(
                f"{deleted} audit rows match {manifest.key}, which holds {manifest.rows}: nothing deleted"
            )
    manifest.state, manifest.deleted_at = "deleted", datetime.now(UTC).isoformat()
    storage.put_bytes(manifest.manifest_key, manifest.dump(), content_type="application/json")
    return int(deleted)


# -- reading and restoring ----------------------------------------------------------------------------


def manifests(storage: Storage, month: str | None = None) -> list[Manifest]:
    """The archive's manifests (only ``month``'s, ``YYYY-MM``, if given), oldest rows first."""
    prefix = f"{PREFIX}{month}/" if month else PREFIX
    found = [
        Manifest.load(storage.get_bytes(key)) for key in storage.list(prefix) if key.endswith(MANIFEST_SUFFIX)
    ]
    return sorted(found, key=lambda manifest: manifest.first_id)


def pending_manifests(storage: Storage) -> list[Manifest]:
    """Manifests whose rows may still be in the table (their run was interrupted)."""
    return [manifest for manifest in manifests(storage) if manifest.state == "archived"]


def read(storage: Storage, month: str | None = None) -> Iterator[dict[str, Any]]:
    """Every archived audit row (of ``month`` if given), in id order, as it was in the table
    (``at`` an aware datetime). Data files without a manifest are not part of the archive."""
    for manifest in manifests(storage, month):
        with storage.open(manifest.key) as source, gzip.open(source, "rb") as lines:
            for line in lines:
                row = json.loads(line)
                row["at"] = datetime.fromisoformat(row["at"])
                yield row


def restore(engine: Engine, storage: Storage, month: str | None = None, *, batch_size: int = FETCH) -> int:
    """Put archived rows (of ``month`` if given) back into ``audit_logs`` with their ids, skipping
    ids already there (a restore can be repeated); return how many were inserted. The next
    archival run moves them out again if they are still past the retention."""
    inserted = 0
    batch: list[dict[str, Any]] = []

    def flush() -> int:
        ids = [row["id"] for row in batch]
        with engine.begin() as connection:
            present = set(connection.scalars(select(AuditLog.id).where(AuditLog.id.in_(ids))))
            missing = [row for row in batch if row["id"] not in present]
            if missing:
                connection.execute(insert(_TABLE), missing)
        batch.clear()
        return len(missing)

    for row in read(storage, month):
        batch.append(row)
        if len(batch) >= batch_size:
            inserted += flush()
    if batch:
        inserted += flush()
    return inserted
