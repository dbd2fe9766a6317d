"""Scheduled jobs on a real worker: a monthly report is stored and its admins get an email at the
fake SendGrid; a backup lands in storage as a restorable dump."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.jobs import JobStore
from store.models import Report, User
from tests.fakes.sendgrid import FakeSendGrid
from tests.worker import WorkerProcess, wait_until


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(
            User(id=1, email="admin@example.edu", name="Carla Admin", role="admin", channel_order=["email"])
        )
        session.commit()
    yield engine
    engine.dispose()


def state(engine: Engine, message_id: str) -> str | None:
    job = JobStore(engine).get(message_id)
    return job.state if job is not None else None


def test_the_monthly_health_summary_is_stored_and_the_admins_are_emailed(
    edujobs_env: dict[str, str], engine: Engine, fake_sendgrid: FakeSendGrid, tmp_path: Path
) -> None:
    env = {**edujobs_env, "EDUJOBS_STORAGE_URL": f"file:{tmp_path / 'storage'}"}
    worker = WorkerProcess(env, threads=2).wait_ready()
    client = Client(env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    try:
        message_id = client.send("reports.generate_system_health_summary", {"month": "2026-10"})
        wait_until(lambda: len(fake_sendgrid.mails()) == 1, timeout=60, what="the report email")
        [mail] = fake_sendgrid.mails()
        assert mail["personalizations"][0]["to"][0]["email"] == "admin@example.edu"
        assert "System health 2026-10" in mail["subject"]
        with Session(engine) as session:
            [report] = session.scalars(select(Report)).all()
        assert (report.kind, report.format, report.status) == ("system_health_summary", "json", "ready")
        assert (tmp_path / "storage" / "reports" / "system_health_summary").is_dir()
        wait_until(lambda: state(engine, message_id) == "succeeded", timeout=30, what="the job state")
        job = JobStore(engine).get(message_id)
        assert job is not None and job.result_summary is not None
        assert job.result_summary["admins_told"] == 1

        backup_id = client.send("maintenance.backup_database", {"keep_days": 7})
        wait_until(lambda: state(engine, backup_id) == "succeeded", timeout=60, what="the backup")
        dumps = list((tmp_path / "storage" / "backups").rglob("*.dump"))
        assert len(dumps) == 1
        listing = subprocess.run(
            ["pg_restore", "--list", str(dumps[0])], capture_output=True, text=True, check=True
        )
        assert "TABLE public reports" in listing.stdout
    finally:
        client.close()
        worker.stop()
