"""Cleanup, backups (pg_dump and SQLite), archival and the monthly reports, on the real databases."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from actors.maintenance import service
from actors.reports import monthly
from store import audit
from store.db import make_engine
from store.jobs import JobStore
from store.migrate import upgrade
from store.models import AccessLog, Delivery, Iep, JobRecord, ProcessedEvent, Report, User
from store.models_schedules import ScheduleFire
from store.storage import LocalStorage, Storage

NOW = datetime.now(UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def old_and_new_rows(engine: Engine, *, old: timedelta) -> None:
    jobs = JobStore(engine)
    for message_id in ("old-done", "new-done", "old-running"):
        jobs.mark_running(message_id, 1, actor_name="a.b", queue="maintenance")
    jobs.mark_succeeded("old-done")
    jobs.mark_succeeded("new-done")
    with Session(engine) as session:
        session.query(JobRecord).filter(JobRecord.message_id.in_(["old-done", "old-running"])).update(
            {"updated_at": NOW - old}, synchronize_session=False
        )
        session.add_all(
            [
                Delivery(
                    idempotency_key="k-old",
                    channel="email",
                    actor_name="a",
                    message_id="m",
                    status="sent",
                    completed_at=NOW - old,
                ),
                Delivery(
                    idempotency_key="k-new",
                    channel="email",
                    actor_name="a",
                    message_id="m",
                    status="sent",
                    completed_at=NOW,
                ),
                Delivery(
                    idempotency_key="k-pending",
                    channel="email",
                    actor_name="a",
                    message_id="m",
                    status="pending",
                    claimed_at=NOW - old,
                ),
                AccessLog(user_id=1, actor_user_id=2, resource="grades", action="view", at=NOW - old),
                AccessLog(user_id=1, actor_user_id=2, resource="grades", action="view", at=NOW),
            ]
        )
        session.commit()


def expired_report(engine: Engine, storage: Storage) -> None:
    """A ready report that expired yesterday, its file at ``reports/x/2026-01-01/old.json``."""
    stored = storage.put_bytes("reports/x/2026-01-01/old.json", b"{}")
    with Session(engine) as session:
        session.add(
            Report(
                kind="x",
                format="json",
                params_hash="h",
                status="ready",
                storage_uri=stored.url,
                expires_at=NOW - timedelta(days=1),
            )
        )
        session.commit()


def test_cleanup_deletes_only_what_outlived_its_use_and_expired_report_files(
    engine: Engine, storage: LocalStorage
) -> None:
    old_and_new_rows(engine, old=timedelta(days=200))
    expired_report(engine, storage)
    with Session(engine) as session:
        session.add(
            ScheduleFire(
                schedule="s",
                fire_time=NOW - timedelta(days=400),
                status="enqueued",
                actor_name="a",
                claimed_by="x",
            )
        )
        session.add_all(
            [
                ProcessedEvent(handler="h", event_id="old", processed_at=NOW - timedelta(days=91)),
                ProcessedEvent(handler="h", event_id="new", processed_at=NOW - timedelta(days=89)),
            ]
        )
        session.commit()
    counts = service.run_cleanup(engine, storage)
    assert counts == {
        "job_records": 1,
        "deliveries": 1,
        "digest_events": 0,
        "schedule_fires": 1,
        "processed_events": 1,
        "expired_reports": 1,
        "stale_media_workdirs": 0,
        "stale_upload_temp_files": 0,
    }
    assert not storage.exists("reports/x/2026-01-01/old.json")
    with Session(engine) as session:
        assert sorted(session.scalars(select(JobRecord.message_id))) == ["new-done", "old-running"]
        assert sorted(session.scalars(select(Delivery.idempotency_key))) == ["k-new", "k-pending"]
        assert session.scalar(select(Report.status)) == "expired"
        assert list(session.scalars(select(ProcessedEvent.event_id))) == ["new"]
    assert service.run_cleanup(engine, storage)["job_records"] == 0


def test_a_postgresql_backup_is_a_restorable_dump_and_old_backups_are_pruned(
    engine: Engine, storage: LocalStorage
) -> None:
    storage.put_bytes("backups/2020-01-01/edujobs-010203.dump", b"old")
    result = service.backup_database(engine, storage, keep_days=30)
    assert result["pruned"] == 1 and not storage.exists("backups/2020-01-01/edujobs-010203.dump")
    path = storage.local_path(result["key"])
    assert path is not None and result["bytes"] > 1000
    listing = subprocess.run(
        ["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE public job_records" in listing and "TABLE public apscheduler_jobs" in listing
    assert "password" not in " ".join(path.parts)


def test_a_sqlite_backup_is_a_consistent_copy(tmp_path: Path, storage: LocalStorage) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    upgrade(url)
    engine = make_engine(url)
    audit.record(engine, actor="ana", action="test", target="backup")
    result = service.backup_database(engine, storage)
    path = storage.local_path(result["key"])
    assert path is not None and result["key"].endswith(".sqlite3")
    copy = sqlite3.connect(path)
    assert copy.execute("SELECT actor FROM audit_logs").fetchall() == [("ana",)]
    copy.close()
    engine.dispose()


def test_archival_moves_old_rows_to_gzipped_json_lines_then_deletes_them(
    engine: Engine, storage: LocalStorage
) -> None:
    old_and_new_rows(engine, old=timedelta(days=400))
    result = service.archive_old_data(engine, storage, days=365, batch_size=100)
    assert (result["access_logs"], result["job_records"], result["deliveries"]) == (1, 1, 1)
    archived = {key.split("/")[1]: key for key in result["files"]}
    lines = gzip.decompress(storage.get_bytes(archived["job_records"])).decode().splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == ["old-done"]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(AccessLog)) == 1
        assert sorted(session.scalars(select(JobRecord.message_id))) == ["new-done", "old-running"]
    assert service.archive_old_data(engine, storage, days=365)["files"] == []


def test_the_compliance_audit_covers_exactly_last_month(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all([User(id=1, name="S", role="student"), User(id=2, name="C", role="admin")])
        session.flush()
        session.add(
            Iep(user_id=1, coordinator_id=2, starts_on=date(2026, 10, 5), review_due_on=date(2027, 10, 5))
        )
        session.add(
            Iep(user_id=1, coordinator_id=2, starts_on=date(2025, 10, 31), review_due_on=date(2026, 10, 31))
        )
        session.add(
            AccessLog(
                user_id=1,
                actor_user_id=2,
                resource="iep",
                action="view",
                at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC),
            )
        )
        session.add(
            AccessLog(
                user_id=1,
                actor_user_id=2,
                resource="iep",
                action="view",
                at=datetime(2026, 11, 1, tzinfo=UTC),
            )
        )
        session.commit()
    audit.record(engine, actor="ana", action="dlq.requeue", target="notifications")
    data = monthly.compliance_audit(engine, "2026-10")
    assert data["month"] == "2026-10"
    assert [i["starts_on"] for i in data["ieps_started"]] == ["2026-10-05"]
    assert [i["review_due_on"] for i in data["iep_reviews_due"]] == ["2026-10-31"]
    assert data["record_access"] == {"total": 1, "by_accessor": {"2": 1}}
    assert data["operator_actions"]["total"] == 0  # the requeue happened today, not in October
    csv_text = monthly.access_csv(data["_access_rows"]).decode()
    assert csv_text.splitlines()[0] == "at,accessed_by_user_id,student_user_id,resource,action"
    assert len(csv_text.splitlines()) == 2
    assert monthly.month_bounds(None, datetime(2026, 1, 15, tzinfo=UTC))[0] == "2025-12"


def test_the_health_summary_counts_jobs_deliveries_and_fires(engine: Engine) -> None:
    old_and_new_rows(engine, old=timedelta(seconds=1))
    JobStore(engine).mark_running("dead-1", 1, actor_name="x.fail", queue="maintenance")
    JobStore(engine).mark_dead("dead-1", "boom")
    label = f"{NOW:%Y-%m}"
    data = monthly.system_health(engine, label)
    assert data["jobs"]["by_state"]["succeeded"] == 2 and data["jobs"]["by_state"]["dead"] == 1
    assert data["jobs"]["actors"][0] == {"actor": "x.fail", "dead": 1, "failed_attempts": 0, "succeeded": 0}
    assert data["deliveries"]["email"]["sent"] >= 1
