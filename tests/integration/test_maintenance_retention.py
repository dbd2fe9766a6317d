"""Issue 18, item 4: audit-log retention (archived, checked, then deleted; crash-safe), cleanup of
media left by deleted assets, and ``dry_run`` on every destructive maintenance job.

On PostgreSQL and SQLite, with the local storage in a temporary directory and moto's S3 server.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

from actors.maintenance import orphan_media, service
from actors.maintenance.dead_letters import archive_dead_letters
from store import audit_archive, dead_letter_archive
from store.db import make_engine
from store.migrate import upgrade
from store.models import AccessLog, AuditLog, Delivery, JobRecord, MediaAsset, Report
from store.models_schedules import ScheduleFire
from store.storage import LocalStorage, Storage, StoredObject, get_storage
from tests.amqp import depth
from tests.integration.test_dlq import topology  # noqa: F401  (fixture)
from tests.integration.test_dlq_archive import MARGIN_MS, TTL_MS, aged_dead_letter
from tests.integration.test_maintenance_and_reports import expired_report, old_and_new_rows
from tests.integration.test_storage import fake_s3  # noqa: F401  (fixture)
from tests.media_fixtures import local_or_s3_storage

NOW = datetime.now(UTC)
RETENTION_DAYS = 2557
HOUR = 3600.0

#: Each database with one storage backend (both databases and both backends, in two runs).
DATABASE_AND_STORAGE = pytest.mark.parametrize(
    ("engine", "storage"), [("postgresql", "local"), ("sqlite", "s3")], indirect=True
)
SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return local_or_s3_storage(request, tmp_path)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("database_url")
    else:
        url = f"sqlite:///{tmp_path / 'edujobs.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def audit_rows(engine: Engine, *, old: int, young: int) -> list[dict[str, Any]]:
    """``old`` rows past the retention, one a month apart going back from 8 years ago (oldest
    first, so ids follow time), then ``young`` rows within it; returns the old ones as inserted."""
    rows = [
        {
            "at": NOW - timedelta(days=8 * 365 + 31 * (old - i)),
            "actor": f"ana{i}",
            "action": "dlq.purge",
            "target": "notifications",
            "details": {"count": i, "dry_run": False, "reason": "café ☕"},
        }
        for i in range(old)
    ] + [
        {"at": NOW - timedelta(days=365 * 6 - i), "actor": "bo", "action": "queue.pause", "target": "media"}
        for i in range(young)
    ]
    with engine.begin() as connection:
        for row in rows:
            connection.execute(insert(AuditLog), row)
    with engine.connect() as connection:
        stored = connection.execute(select(AuditLog.__table__).order_by(AuditLog.id)).mappings().all()
    return [dict(row) for row in stored[:old]]


def table_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(select(AuditLog.id).order_by(AuditLog.id)))


def everything(engine: Engine, storage: Storage) -> dict[str, Any]:
    """What a dry run must leave untouched: every row of the tables maintenance touches, and every
    stored object with its bytes."""
    state: dict[str, Any] = {}
    with engine.connect() as connection:
        for model in (AuditLog, AccessLog, JobRecord, Delivery, Report, ScheduleFire, MediaAsset):
            table = model.__table__
            rows = connection.execute(select(table)).mappings().all()
            state[model.__tablename__] = sorted(
                json.dumps(dict(row), default=str, sort_keys=True) for row in rows
            )
    state["storage"] = {key: storage.get_bytes(key) for key in storage.list("")}
    return state


# -- audit-log retention ------------------------------------------------------------------------------


@DATABASE_AND_STORAGE
def test_audit_rows_past_retention_are_archived_checked_then_deleted_and_can_be_restored(
    engine: Engine, storage: Storage
) -> None:
    # Given 7 audit rows older than 7 years and 3 younger
    old = audit_rows(engine, old=7, young=3)
    young_ids = table_ids(engine)[7:]
    # When a dry run looks, then the archival runs in batches of 3
    before = everything(engine, storage)
    dry = audit_archive.archive_audit_logs(
        engine, storage, retention_days=RETENTION_DAYS, batch_size=3, dry_run=True
    )
    assert everything(engine, storage) == before  # nothing changed
    done = audit_archive.archive_audit_logs(engine, storage, retention_days=RETENTION_DAYS, batch_size=3)
    # Then the dry run announced exactly what the run did: 7 rows in 3 files, under the same keys
    assert (dry.archived, dry.deleted, dry.files) == (7, 7, done.files)
    assert (done.archived, done.deleted, len(done.files), done.recovered) == (7, 7, 3, 0)
    first = old[0]
    assert done.files[0] == f"audit-logs/{first['at']:%Y-%m}/audit-logs-{first['id']:012d}.jsonl.gz"
    # And only the young rows are left in the table
    assert table_ids(engine) == young_ids
    # And each file has a manifest saying its rows were deleted, whose checksum is the file's
    manifests = audit_archive.manifests(storage)
    assert [m.key for m in manifests] == done.files
    assert [m.rows for m in manifests] == [3, 3, 1] and {m.state for m in manifests} == {"deleted"}
    for manifest in manifests:
        audit_archive.verify(storage, manifest)
    # And the archive reads back as the rows were, byte for byte (gzipped JSON lines)
    assert list(audit_archive.read(storage)) == old
    line = json.loads(gzip.decompress(storage.get_bytes(done.files[0])).splitlines()[0])
    assert line["details"]["reason"] == "café ☕" and line["at"].endswith("+00:00")
    # And a second run has nothing to do
    again = audit_archive.archive_audit_logs(engine, storage, retention_days=RETENTION_DAYS, batch_size=3)
    assert (again.archived, again.deleted, again.files) == (0, 0, [])
    # And a restore puts the rows back with their ids, once however often it runs
    assert audit_archive.restore(engine, storage) == 7
    assert audit_archive.restore(engine, storage) == 0
    with engine.connect() as connection:
        restored = connection.execute(select(AuditLog.__table__).order_by(AuditLog.id)).mappings().all()
    assert [dict(row) for row in restored[:7]] == old


class InterruptedStorage(LocalStorage):
    """The local storage of a process stopped at one write: the ``stop_at``-th write of a manifest
    raises (the process died there), the write not done."""

    def __init__(self, root: Path, *, stop_at: int) -> None:
        super().__init__(root)
        self.stop_at = stop_at
        self.manifest_writes = 0

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        if key.endswith(audit_archive.MANIFEST_SUFFIX):
            self.manifest_writes += 1
            if self.manifest_writes == self.stop_at:
                raise KeyboardInterrupt(f"stopped before writing {key}")
        return super().put_bytes(key, data, content_type=content_type)


@pytest.mark.parametrize(
    "stop",
    [
        "after the file, before its manifest",
        "after the manifest, before the deletion",
        "after the deletion, before the manifest says so",
    ],
)
def test_an_archival_stopped_between_archive_and_delete_loses_and_duplicates_nothing(
    engine: Engine, tmp_path: Path, stop: str
) -> None:
    # Given 7 old rows and 2 young, archived in batches of 3 by a run stopped during its 2nd batch
    old = audit_rows(engine, old=7, young=2)
    young_ids = table_ids(engine)[7:]
    root = tmp_path / "storage"
    if stop == "after the manifest, before the deletion":

        def die(manifest: audit_archive.Manifest) -> None:
            if manifest.first_id != old[0]["id"]:
                raise KeyboardInterrupt("stopped between the archive and the deletion")

        with pytest.raises(KeyboardInterrupt):
            audit_archive.archive_audit_logs(
                engine, LocalStorage(root), retention_days=RETENTION_DAYS, batch_size=3, after_archive=die
            )
    else:
        # The manifest writes: 1st batch archived (1), deleted (2); 2nd batch archived (3), deleted (4).
        stop_at = 3 if stop == "after the file, before its manifest" else 4
        with pytest.raises(KeyboardInterrupt):
            audit_archive.archive_audit_logs(
                engine, InterruptedStorage(root, stop_at=stop_at), retention_days=RETENTION_DAYS, batch_size=3
            )
    storage = LocalStorage(root)
    second_batch = {row["id"] for row in old[3:6]}
    deleted_before_stop = stop == "after the deletion, before the manifest says so"
    assert second_batch.isdisjoint(table_ids(engine)) == deleted_before_stop
    # When the next run goes
    rerun = audit_archive.archive_audit_logs(engine, storage, retention_days=RETENTION_DAYS, batch_size=3)
    # Then every old row is archived exactly once, the table holds only the young ones
    assert list(audit_archive.read(storage)) == old
    assert table_ids(engine) == young_ids
    data_files = [key for key in storage.list("audit-logs/") if key.endswith(".jsonl.gz")]
    assert len(data_files) == 3  # the stopped batch's file was replaced, not doubled
    assert {m.state for m in audit_archive.manifests(storage)} == {"deleted"}
    # And the rerun finished the stopped batch (if its manifest was written) and archived the rest
    if stop == "after the file, before its manifest":
        assert (rerun.recovered, rerun.archived, rerun.deleted) == (0, 4, 4)
    else:
        assert rerun.recovered == 1 and rerun.archived == 1
        assert rerun.deleted == (1 if deleted_before_stop else 4)


@SQLITE_ONLY
def test_the_cli_lists_the_archive_and_restores_it_audited(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ops.cli import app

    monkeypatch.setenv("EDUJOBS_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path / 'storage'}")
    get_storage.cache_clear()
    old = audit_rows(engine, old=4, young=0)
    audit_archive.archive_audit_logs(
        engine, LocalStorage(tmp_path / "storage"), retention_days=RETENTION_DAYS, batch_size=3
    )
    runner = CliRunner()
    listed = runner.invoke(app, ["audit-archive", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(m["rows"], m["state"]) for m in json.loads(listed.output)] == [(3, "deleted"), (1, "deleted")]
    month = f"{old[0]['at']:%Y-%m}"
    one = runner.invoke(app, ["audit-archive", "list", "--month", month, "--json"])
    assert [m["first_id"] for m in json.loads(one.output)] == [old[0]["id"]]
    assert runner.invoke(app, ["audit-archive", "list", "--month", "2019"]).exit_code == 2
    restored = runner.invoke(app, ["audit-archive", "restore", "--as", "dora", "--json"])
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.output) == {"month": None, "restored": 4, "by": "dora"}
    get_storage.cache_clear()
    with engine.connect() as connection:
        rows = connection.execute(select(AuditLog.__table__).order_by(AuditLog.id)).mappings().all()
    assert [dict(row) for row in rows[:4]] == old
    assert (rows[4]["actor"], rows[4]["action"], rows[4]["details"]) == (
        "dora",
        "audit.restore",
        {"restored": 4},
    )


#: A process that archives in batches of 3 and is SIGKILLed once the 2nd batch's manifest is written,
#: before its rows are deleted (no ``finally``, no rollback in Python: the process is gone).
KILLED_RUN = """
import os, signal, sys
from store import audit_archive
from store.db import make_engine
from store.storage import LocalStorage

def die(manifest):
    if manifest.first_id != int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

audit_archive.archive_audit_logs(
    make_engine(sys.argv[1]), LocalStorage(sys.argv[2]), retention_days=2557, batch_size=3, after_archive=die
)
"""


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_killed_archival_process_loses_and_duplicates_nothing(engine: Engine, tmp_path: Path) -> None:
    old = audit_rows(engine, old=7, young=2)
    young_ids = table_ids(engine)[7:]
    root = tmp_path / "storage"
    url = engine.url.render_as_string(hide_password=False)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, url, str(root), str(old[0]["id"])],
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    storage = LocalStorage(root)
    assert [m.state for m in audit_archive.manifests(storage)] == ["deleted", "archived"]
    assert len(table_ids(engine)) == 2 + 4  # the 2nd batch's rows are still in the table
    rerun = audit_archive.archive_audit_logs(engine, storage, retention_days=RETENTION_DAYS, batch_size=3)
    assert (rerun.recovered, rerun.archived, rerun.deleted) == (1, 1, 4)
    assert list(audit_archive.read(storage)) == old and table_ids(engine) == young_ids


class CorruptingStorage(LocalStorage):
    """A storage that stores something other than what it was given (a faulty disk or proxy)."""

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> StoredObject:
        return self.put_bytes(key, gzip.compress(b'{"id": 1}\n'), content_type=content_type)


@SQLITE_ONLY
def test_a_file_that_does_not_read_back_as_written_deletes_nothing(engine: Engine, tmp_path: Path) -> None:
    audit_rows(engine, old=4, young=1)
    ids = table_ids(engine)
    storage = CorruptingStorage(tmp_path / "storage")
    with pytest.raises(audit_archive.AuditArchiveError, match="does not read back as written"):
        audit_archive.archive_audit_logs(engine, storage, retention_days=RETENTION_DAYS)
    assert table_ids(engine) == ids
    assert audit_archive.manifests(storage) == []  # not part of the archive
    assert list(audit_archive.read(storage)) == []


# -- media left by deleted assets ---------------------------------------------------------------------


def media_files(engine: Engine, storage: Storage) -> tuple[int, int]:
    """Asset ``kept`` with two outputs, asset ``gone`` (row deleted) with three, and a key under
    media/ that names no asset; returns the two ids."""
    with Session(engine) as session:
        kept, gone = (
            MediaAsset(kind="video", source_uri="s.mp4"),
            MediaAsset(kind="image", source_uri="i.png"),
        )
        session.add_all([kept, gone])
        session.commit()
        ids = kept.id, gone.id
    storage.put_bytes(f"media/{ids[0]}/video/mp4/720p.mp4", b"k" * 100)
    storage.put_bytes(f"media/{ids[0]}/video/thumbnails/01.jpg", b"k" * 10)
    storage.put_bytes(f"media/{ids[1]}/image/large.webp", b"g" * 1000)
    storage.put_bytes(f"media/{ids[1]}/image/thumbnail.webp", b"g" * 200)
    storage.put_bytes(f"media/{ids[1]}/source.png", b"g" * 30)
    storage.put_bytes("media/uploads/pending.mp4", b"u" * 5)
    storage.put_bytes("reports/x/2026-01-01/r.json", b"{}")
    with engine.begin() as connection:
        connection.execute(delete(MediaAsset).where(MediaAsset.id == ids[1]))
    return ids


@DATABASE_AND_STORAGE
def test_files_of_deleted_assets_are_removed_once_past_the_grace_period(
    engine: Engine, storage: Storage
) -> None:
    kept, gone = media_files(engine, storage)
    # Just written: within the 24 h grace (an upload in progress), so left and reported
    young = orphan_media.clean_orphan_media(engine, storage)
    assert (young.files, young.kept_young, young.kept_young_bytes, young.unrecognized) == (0, 3, 1230, 1)
    # A day and an hour later: a dry run, then the real run, which removes the same
    later = time.time() + 25 * HOUR
    before = everything(engine, storage)
    dry = orphan_media.clean_orphan_media(engine, storage, dry_run=True, now=later)
    assert everything(engine, storage) == before
    done = orphan_media.clean_orphan_media(engine, storage, now=later)
    assert dry.summary() | {"dry_run": False} == done.summary()
    assert (done.files, done.bytes, done.assets, done.kept_young) == (3, 1230, 1, 0)
    assert storage.list("") == [
        f"media/{kept}/video/mp4/720p.mp4",
        f"media/{kept}/video/thumbnails/01.jpg",
        "media/uploads/pending.mp4",
        "reports/x/2026-01-01/r.json",
    ]
    assert not any(key.startswith(f"media/{gone}/") for key in storage.list("media/"))


@SQLITE_ONLY
def test_the_grace_period_is_each_files_own_age(engine: Engine, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    _, gone = media_files(engine, storage)
    old = storage.path(f"media/{gone}/image/large.webp")
    os.utime(old, (time.time() - 30 * HOUR, time.time() - 30 * HOUR))
    done = orphan_media.clean_orphan_media(engine, storage, grace_hours=24)
    assert (done.files, done.bytes, done.kept_young, done.kept_young_bytes) == (1, 1000, 2, 230)
    assert not old.exists() and storage.exists(f"media/{gone}/image/thumbnail.webp")


# -- dry_run on the other destructive jobs ------------------------------------------------------------


def test_a_dry_cleanup_changes_nothing_and_counts_what_the_cleanup_then_removes(
    engine: Engine, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "storage")
    old_and_new_rows(engine, old=timedelta(days=200))
    expired_report(engine, storage)
    # A work directory and an upload temporary file abandoned by killed processes a day ago
    temp = tmp_path / "media-temp"
    workdir = temp / "edujobs-video-abandoned"
    workdir.mkdir(parents=True)
    part = storage.root / "media/9/.720p.mp4.part-0123"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half")
    for path in (workdir, part):
        os.utime(path, (time.time() - 24 * HOUR, time.time() - 24 * HOUR))
    before = everything(engine, storage)
    dry = service.run_cleanup(engine, storage, media_temp_dir=str(temp), dry_run=True)
    assert everything(engine, storage) == before and workdir.exists() and part.exists()
    done = service.run_cleanup(engine, storage, media_temp_dir=str(temp))
    assert (
        dry
        == done
        == {
            "job_records": 1,
            "deliveries": 1,
            "digest_events": 0,
            "processed_events": 0,
            "schedule_fires": 0,
            "expired_reports": 1,
            "stale_media_workdirs": 1,
            "stale_upload_temp_files": 1,
        }
    )
    assert not workdir.exists() and not part.exists() and storage.list("") == []


def test_a_dry_archival_of_old_data_changes_nothing_and_names_the_files_it_would_write(
    engine: Engine, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "storage")
    old_and_new_rows(engine, old=timedelta(days=400))
    before = everything(engine, storage)
    dry = service.archive_old_data(engine, storage, days=365, batch_size=100, now=NOW, dry_run=True)
    assert everything(engine, storage) == before
    done = service.archive_old_data(engine, storage, days=365, batch_size=100, now=NOW)
    assert dry == done and (done["access_logs"], done["job_records"], done["deliveries"]) == (1, 1, 1)
    assert sorted(storage.list("archive/")) == sorted(done["files"])


@SQLITE_ONLY
def test_a_dry_backup_writes_none_and_counts_the_backups_it_would_prune(
    engine: Engine, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.put_bytes("backups/2020-01-01/edujobs-010203.dump", b"old")
    storage.put_bytes("backups/2020-01-02/edujobs-010203.dump", b"old")
    before = everything(engine, storage)
    dry = service.backup_database(engine, storage, keep_days=30, dry_run=True)
    assert everything(engine, storage) == before
    assert dry == {"key": None, "bytes": 0, "pruned": 2}
    assert service.prune_backups(storage, keep_days=30, now=NOW) == 2
    assert storage.list("backups/") == []


def test_a_dry_dead_letter_archival_reads_all_and_leaves_every_letter_in_place(
    topology: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path / "storage")
    old = [aged_dead_letter(topology, {"user_id": i}, age_days=13) for i in range(3)]
    aged_dead_letter(topology, {"user_id": 9}, age_days=1)
    options: dict[str, Any] = {"ttl_ms": TTL_MS, "margin_ms": MARGIN_MS, "queues": ("maintenance",)}
    dry = archive_dead_letters(topology, storage, dry_run=True, **options)
    assert dry["archived"] == 3 and dry["dry_run"] is True and storage.list("") == []
    assert depth(topology, "maintenance.XQ") == 4
    done = archive_dead_letters(topology, storage, **options)
    assert done["archived"] == dry["archived"] and depth(topology, "maintenance.XQ") == 1
    # And the letters the dry run put back were archived in their order
    assert [letter.body for letter in dead_letter_archive.read(storage, "maintenance")] == [
        json.dumps(m).encode() for m in old
    ]


def test_every_destructive_maintenance_actor_takes_dry_run_and_changes_nothing_with_it(
    topology: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actors.maintenance import actors
    from contracts.registry import get_contract

    url = f"sqlite:///{tmp_path / 'edujobs.db'}"
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", url)
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", topology)
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path / 'storage'}")
    monkeypatch.setenv("EDUJOBS_MEDIA_TEMP_DIR", str(tmp_path / "media-temp"))
    monkeypatch.setenv("EDUJOBS_AUDIT_RETENTION_DAYS", "2900")
    get_storage.cache_clear()
    upgrade(url)
    engine = make_engine(url)
    storage = LocalStorage(tmp_path / "storage")
    audit_rows(engine, old=2, young=1)  # 8 years old and more: past 2900 days
    storage.put_bytes("backups/2020-01-01/edujobs-010203.dump", b"old")
    aged_dead_letter(topology, {"user_id": 1}, age_days=13)
    before = everything(engine, storage)
    results = {
        name: getattr(actors, name).fn(dry_run=True)
        for name in (
            "run_cleanup",
            "backup_database",
            "archive_old_data",
            "archive_dead_letters",
            "archive_audit_logs",
            "clean_orphan_media",
        )
    }
    get_storage.cache_clear()
    assert everything(engine, storage) == before and depth(topology, "maintenance.XQ") == 1
    assert all(result["dry_run"] is True for result in results.values())
    assert results["archive_audit_logs"]["retention_days"] == 2900
    assert results["archive_audit_logs"]["archived"] == 2 and results["backup_database"]["pruned"] == 1
    assert results["archive_dead_letters"]["archived"] == 1
    for name in results:  # and the contracts accept it
        assert get_contract(f"maintenance.{name}").validate({"dry_run": True})["dry_run"] is True
    engine.dispose()
