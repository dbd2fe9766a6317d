"""``edujobs reports``: bad input exits 2 naming the field (nothing sent); list, show and download
read the reports and their files; the scheduled reports go to each admin and instructor."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.reports.schedule import last_month, last_week, scheduled_requests
from ops.cli import app
from store import reports
from store.db import make_engine
from store.migrate import upgrade
from store.seed import seed
from store.storage import LocalStorage

TODAY = date(2026, 12, 3)  # a Thursday


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    upgrade(url)
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", url)
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path}/storage")
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2F")  # never reached
    return url


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["student-progress", "--param", "start_date=yesterday"], "parameters.start_date"),
        (["student-progress", "--param", "start_date"], "expected NAME=VALUE"),
        (["financial-summary", "--param", "course_ids=1,x"], "parameters.course_ids.1"),
        (["engagement-metrics", "--param", "instructor_id=3"], "parameters.instructor_id"),
        (["grades-by-mood"], "type: unknown report type 'grades-by-mood'"),
        (["course-performance", "--format", "docx"], "format: unknown report format 'docx'"),
    ],
)
def test_bad_input_exits_2_naming_the_field(database: str, arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["reports", "request", *arguments])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert reports.list_reports(make_engine(database)) == []  # nothing recorded, nothing sent


def test_list_show_and_download_a_ready_report(database: str, tmp_path: Path) -> None:
    engine = make_engine(database)
    report = reports.create_pending(
        engine, "financial-summary", {"group_by": "month"}, "csv", requested_by=None
    )
    key = f"reports/financial-summary/financial-summary-{report.id}.csv"
    LocalStorage(tmp_path / "storage").put_bytes(key, b"# Financial summary\nmetric,value\n")
    reports.set_fields(engine, report.id, status="ready", storage_key=key, row_count=7)
    runner = CliRunner()
    assert runner.invoke(app, ["reports", "list"]).exit_code == 0
    listed = runner.invoke(app, ["reports", "list", "--json"])
    assert listed.exit_code == 0 and '"type": "financial-summary"' in listed.output
    assert '"progress": 100' in listed.output
    shown = runner.invoke(app, ["reports", "show", str(report.id), "--json"])
    assert shown.exit_code == 0 and '"rows": 7' in shown.output and '"status": "ready"' in shown.output
    target = tmp_path / "out.csv"
    downloaded = runner.invoke(app, ["reports", "download", str(report.id), str(target)])
    assert downloaded.exit_code == 0 and target.read_bytes() == b"# Financial summary\nmetric,value\n"
    missing = runner.invoke(app, ["reports", "show", "999"])
    assert missing.exit_code == 1 and "no report 999" in missing.output


def test_scheduled_reports_go_to_each_admin_and_each_instructor_for_the_last_period(database: str) -> None:
    engine = make_engine(database)
    seed(engine, students=120, seed=1, today=TODAY)  # 2 instructors (121, 122), an admin (123)
    assert last_month(TODAY) == (date(2026, 11, 1), date(2026, 11, 30))
    assert last_week(TODAY) == (date(2026, 11, 23), date(2026, 11, 29))
    monthly = list(scheduled_requests(engine, "course-performance", TODAY))
    assert monthly == [(123, {"start_date": "2026-11-01", "end_date": "2026-11-30", "group_by": "week"})]
    weekly = list(scheduled_requests(engine, "instructor-analytics", TODAY))
    assert [(user, p["instructor_id"], p["start_date"]) for user, p in weekly] == [
        (121, 121, "2026-11-23"),
        (122, 122, "2026-11-23"),
    ]
