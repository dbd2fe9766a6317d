"""The report actors on the StubBroker: a scheduled fire fans out one report per instructor, each
made by ``reports.generate_report``, stored, and announced (``notifications.notify_user``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.reports.actors import generate_report, send_scheduled_reports
from store import reports
from store.db import get_engine
from store.migrate import upgrade
from store.seed import seed
from store.storage import get_storage


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    url = f"sqlite:///{tmp_path}/edujobs.db"
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", url)
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path}/storage")
    monkeypatch.setenv("EDUJOBS_RECORD_JOB_STATE", "false")
    get_storage.cache_clear()
    upgrade(url)
    seed(get_engine(), students=120, seed=2)  # instructors 121 and 122
    yield tmp_path
    get_storage.cache_clear()


def test_report_actors_are_declared_on_the_reports_queue() -> None:
    assert generate_report.queue_name == send_scheduled_reports.queue_name == "reports"
    assert generate_report.options["time_limit"] == 1_800_000


def test_a_weekly_fire_makes_each_instructor_their_report(
    configured: Path, stub_broker: StubBroker, stub_worker: dramatiq.Worker
) -> None:
    # When the weekly schedule fires
    send_scheduled_reports.send(type="instructor-analytics", format="csv")
    stub_broker.join("reports")
    stub_worker.join()
    # Then each instructor has a ready report about their own courses, in storage
    made = sorted(reports.list_reports(get_engine()), key=lambda r: r.requested_by or 0)
    assert [(r.requested_by, r.params["instructor_id"], r.status) for r in made] == [
        (121, 121, "ready"),
        (122, 122, "ready"),
    ]
    for report in made:
        assert report.storage_key and get_storage().exists(report.storage_key)
        text = get_storage().get_bytes(report.storage_key).decode()
        assert f"\n{report.requested_by}," in text.split("# instructors\n", 1)[1].split("\n\n")[0]
