"""The five analytics reports in the four formats, on SQLite and PostgreSQL: every file is opened
(csv, json, openpyxl, pdftotext) and its figures compared with the same figures computed here in
plain SQL; the cache serves an identical request; a cancelled report stops without a file."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import BindParameter, Date, Engine, bindparam, text

from actors.maintenance import service as maintenance
from actors.reports.queries import build_report
from actors.reports.service import ReportContext, generate
from contracts.errors import ContractError, ProcessingCancelledError
from contracts.report_params import REPORT_FORMATS, REPORT_TYPES, resolve_parameters
from ops.reports import report_view
from store import reports
from store.db import make_engine
from store.jobs import JobStore, cancel
from store.migrate import upgrade
from store.seed import seed
from store.storage import LocalStorage
from store.types import UTCDateTime
from tests.services import postgres_database

# Seeded ten days ago: the assignments due "in a week" are past now and ungraded (missed).
SEEDED_ON = datetime.now(UTC).date() - timedelta(days=10)
START, END = SEEDED_ON - timedelta(days=70), SEEDED_ON + timedelta(days=8)
PARAMETERS: dict[str, dict[str, Any]] = {
    "course-performance": {"group_by": "week"},
    "student-progress": {"group_by": "week"},
    "engagement-metrics": {"group_by": "day"},
    "financial-summary": {"group_by": "month"},
    "instructor-analytics": {"group_by": "week"},
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reports')}/reports.db"
        upgrade(url)
        engine = make_engine(url)
        seed(engine, students=120, seed=5, today=SEEDED_ON)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        seed(engine, students=120, seed=5, today=SEEDED_ON)
        yield engine
        engine.dispose()


@dataclass
class Told:
    messages: list[tuple[int, str, dict[str, Any], str]] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)


def context(engine: Engine, storage: LocalStorage, told: Told, **overrides: Any) -> ReportContext:
    values: dict[str, Any] = {
        "engine": engine,
        "storage": storage,
        "cache_seconds": 1800,
        "keep_days": 7,
        "link_base": "https://jobs.example.edu",
        "notify": lambda *args: told.messages.append(args),
        "progress": told.progress.append,
        "message_id": None,
    }
    return ReportContext(**(values | overrides))


def sql(engine: Engine, query: str) -> list[dict[str, Any]]:
    """Rows of plain SQL over the period (``:start``/``:end`` instants, ``:first``/``:last`` days)."""
    binds: list[BindParameter[Any]] = [
        bindparam("start", datetime.combine(START, time(0), UTC), type_=UTCDateTime()),
        bindparam("end", datetime.combine(END + timedelta(days=1), time(0), UTC), type_=UTCDateTime()),
        bindparam("now", datetime.now(UTC), type_=UTCDateTime()),
        bindparam("first", START, type_=Date()),
        bindparam("last", END, type_=Date()),
    ]
    statement = text(query).bindparams(*(b for b in binds if f":{b.key}" in query))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement)]


# The figures, computed independently of actors.reports.queries --------------------------------------

GRADE = "g.points * 100.0 / a.max_points"


def expected(
    engine: Engine, report_type: str
) -> tuple[dict[str, float], str, list[str], list[dict[str, Any]]]:
    """(summary figures, a section, its key columns, its expected rows keyed by those columns)."""
    if report_type == "course-performance":
        rows = sql(
            engine,
            f"""SELECT c.id AS course_id,
                 (SELECT count(*) FROM enrollments e
                   WHERE e.course_id = c.id AND e.enrolled_at < :end) AS enrolments,
                 (SELECT avg({GRADE}) FROM grades g JOIN assignments a ON a.id = g.assignment_id
                   WHERE a.course_id = c.id AND a.due_at >= :start AND a.due_at < :end) AS average_grade,
                 (SELECT count(*) FROM lesson_views v WHERE v.course_id = c.id
                   AND v.viewed_at >= :start AND v.viewed_at < :end) AS lesson_views
               FROM courses c ORDER BY c.id""",
        )
        total = sql(
            engine,
            "SELECT count(*) AS enrolments, 100.0 * sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END)"
            " / count(*) AS completion_rate FROM enrollments WHERE enrolled_at < :end",
        )[0]
        return total, "courses", ["course_id"], rows
    if report_type == "student-progress":
        rows = sql(
            engine,
            f"""SELECT e.user_id AS student_id, e.course_id,
                 (SELECT avg({GRADE}) FROM grades g JOIN assignments a ON a.id = g.assignment_id
                   WHERE g.user_id = e.user_id AND a.course_id = e.course_id
                   AND a.due_at >= :start AND a.due_at < :end) AS average_grade,
                 (SELECT 100.0 * sum(CASE WHEN t.status IN ('present', 'late') THEN 1 ELSE 0 END) / count(*)
                   FROM attendance t WHERE t.user_id = e.user_id AND t.course_id = e.course_id
                   AND t.day >= :first AND t.day <= :last) AS attendance_rate,
                 (SELECT count(*) FROM assignments a WHERE a.course_id = e.course_id
                   AND a.due_at >= :start AND a.due_at < :end AND a.due_at < :now
                   AND NOT EXISTS (SELECT 1 FROM grades g WHERE g.assignment_id = a.id
                                   AND g.user_id = e.user_id)) AS missed_assignments,
                 (SELECT count(*) FROM lesson_views v
                   WHERE v.user_id = e.user_id AND v.course_id = e.course_id
                   AND v.viewed_at >= :start AND v.viewed_at < :end) AS lesson_views
               FROM enrollments e WHERE e.enrolled_at < :end ORDER BY e.user_id, e.course_id""",
        )
        total = sql(
            engine, "SELECT count(DISTINCT user_id) AS students FROM enrollments WHERE enrolled_at < :end"
        )[0]
        return total, "students", ["student_id", "course_id"], rows
    if report_type == "engagement-metrics":
        rows = sql(
            engine,
            """SELECT l.course_id, l.position, count(DISTINCT v.user_id) AS viewers, count(*) AS views
               FROM lesson_views v JOIN lessons l ON l.id = v.lesson_id
               WHERE v.viewed_at >= :start AND v.viewed_at < :end
               GROUP BY l.course_id, l.position ORDER BY l.course_id, l.position""",
        )
        total = sql(
            engine,
            "SELECT count(DISTINCT user_id) AS active_users, count(*) AS lesson_views FROM lesson_views"
            " WHERE viewed_at >= :start AND viewed_at < :end",
        )[0]
        return total, "drop_off", ["course_id", "position"], rows
    if report_type == "financial-summary":
        rows = sql(
            engine,
            """SELECT course_id,
                 sum(CASE WHEN kind = 'payment' THEN amount_cents ELSE 0 END) / 100.0 AS revenue,
                 sum(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) / 100.0 AS refunded,
                 sum(CASE WHEN kind = 'payment' THEN amount_cents ELSE -amount_cents END) / 100.0 AS net
               FROM payments WHERE paid_at >= :start AND paid_at < :end
               GROUP BY course_id ORDER BY course_id""",
        )
        total = sql(
            engine,
            "SELECT sum(CASE WHEN kind = 'payment' THEN amount_cents ELSE 0 END) / 100.0 AS revenue,"
            " sum(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) / 100.0 AS refunded"
            " FROM payments WHERE paid_at >= :start AND paid_at < :end",
        )[0]
        return total, "by_course", ["course_id"], rows
    rows = sql(
        engine,
        f"""SELECT u.id AS instructor_id,
             (SELECT count(*) FROM courses c WHERE c.instructor_id = u.id) AS courses,
             (SELECT count(*) FROM enrollments e JOIN courses c ON c.id = e.course_id
               WHERE c.instructor_id = u.id AND e.enrolled_at < :end) AS enrolments,
             (SELECT avg({GRADE}) FROM grades g JOIN assignments a ON a.id = g.assignment_id
               JOIN courses c ON c.id = a.course_id
               WHERE c.instructor_id = u.id AND a.due_at >= :start AND a.due_at < :end) AS average_grade
           FROM users u WHERE u.role = 'instructor' ORDER BY u.id""",
    )
    total = sql(engine, "SELECT count(*) AS instructors FROM users WHERE role = 'instructor'")[0]
    return total, "instructors", ["instructor_id"], rows


# Reading the files back ---------------------------------------------------------------------------


def read_csv(path: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    sections: dict[str, list[dict[str, Any]]] = {}
    blocks = path.read_text().split("\n# ")
    for block in blocks[1:]:
        name, _, body = block.partition("\n")
        sections[name] = list(csv.DictReader(io.StringIO(body.strip("\n"))))
    summary = {row["metric"]: row["value"] for row in sections.pop("summary")}
    return summary, sections


def read_json(path: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    data = json.loads(path.read_text())
    assert all(len(s["rows"]) == s["row_count"] for s in data["sections"].values())
    return data["summary"], {name: s["rows"] for name, s in data["sections"].items()}


def read_xlsx(
    path: Path, report_type: str, engine: Engine
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    spec = build_report(
        report_type, resolve_parameters(report_type, period(report_type)), engine.dialect.name
    )
    book = load_workbook(path, read_only=True)
    assert book.sheetnames[0] == "Summary"
    labels = {c.label: c.key for c in spec.summary_columns}
    summary = {
        labels[row[0]]: row[1]
        for row in book["Summary"].iter_rows(values_only=True)
        if row and row[0] in labels
    }
    sections = {}
    for section in spec.sections:
        sheet = book[section.title[:28]]
        rows = list(sheet.iter_rows(values_only=True))
        assert list(rows[0]) == [c.label for c in section.columns]  # the header
        keys = [c.key for c in section.columns]
        sections[section.name] = [dict(zip(keys, row, strict=True)) for row in rows[1:]]
    book.close()
    return summary, sections


def period(report_type: str) -> dict[str, Any]:
    return PARAMETERS[report_type] | {"start_date": START.isoformat(), "end_date": END.isoformat()}


def close(got: Any, want: Any) -> bool:
    if want is None:
        return got in (None, "")
    return abs(float(got) - float(want)) <= 0.011


def shown(value: Any, key: str) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if key in ("revenue", "refunded"):
        return f"{value:,.2f}"
    return f"{value:.2f}%"


# The tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", REPORT_FORMATS)
@pytest.mark.parametrize("report_type", REPORT_TYPES)
def test_every_report_in_every_format_has_the_figures_sql_gives(
    seeded: Engine, report_type: str, fmt: str, tmp_path: Path
) -> None:
    # Given a seeded database and storage
    storage, told = LocalStorage(tmp_path / "storage"), Told()
    # When the report is made
    result = generate(
        context(seeded, storage, told),
        report_type=report_type,
        parameters=period(report_type),
        fmt=fmt,
        requested_by=1,
        fresh=True,
    )
    # Then it is stored, ready, and its requester was told with a link to it
    report = reports.get(seeded, result["report_id"])
    assert report is not None and report.status == "ready" and report.storage_key
    assert report.storage_key.endswith(f".{fmt}") and storage.exists(report.storage_key)
    assert told.progress and max(told.progress) >= 95
    [(user_id, template, message, _key)] = told.messages
    assert (user_id, template) == (1, "report_ready")
    assert message["download_url"] == f"https://jobs.example.edu/v1/reports/{report.id}/file"
    path = tmp_path / f"copy.{fmt}"
    path.write_bytes(storage.get_bytes(report.storage_key))
    want_summary, section, keys, want_rows = expected(seeded, report_type)
    assert want_rows, "the seed gives every report rows"
    if fmt == "pdf":
        # Title, figures, the chart's title, page numbers
        text_ = subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
        ).stdout
        assert report_type.replace("-", " ").capitalize() in text_ and "Page 1" in text_
        for key, value in want_summary.items():
            assert shown(round(value, 2) if isinstance(value, float) else value, key) in text_, key
        return
    # And the file holds the figures computed here in SQL
    summary, sections = {"csv": read_csv, "json": read_json}.get(
        fmt, lambda p: read_xlsx(p, report_type, seeded)
    )(path)
    for key, value in want_summary.items():
        assert close(summary[key], value), (key, summary[key], value)
    got = {tuple(int(row[k]) for k in keys): row for row in sections[section]}
    assert len(got) == len(want_rows)
    for want in want_rows:
        row = got[tuple(int(want[k]) for k in keys)]
        for key, value in want.items():
            assert close(row[key], value), (section, key, row[key], value)
    if report_type == "student-progress":
        assert any(int(row["missed_assignments"]) > 0 for row in sections[section])


def test_a_long_table_is_cut_in_the_pdf_with_a_note_saying_where_the_rows_are(
    seeded: Engine, tmp_path: Path
) -> None:
    # Given 360 student-course rows, more than the PDF shows
    storage, told = LocalStorage(tmp_path), Told()
    result = generate(
        context(seeded, storage, told),
        report_type="student-progress",
        parameters={},
        fmt="pdf",
        requested_by=None,
    )
    report = reports.get(seeded, result["report_id"])
    assert report is not None and report.storage_key and report.row_count and report.row_count > 360
    path = storage.local_path(report.storage_key)
    assert path is not None
    text_ = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    # Then the PDF says how many rows there are, and where the full rows are
    assert "This table has 360 rows; the PDF shows the first 100" in " ".join(text_.split())
    assert "CSV, XLSX and JSON" in " ".join(text_.split())
    assert told.messages == []  # nobody to tell


def test_an_identical_request_is_served_from_the_cache_unless_fresh(seeded: Engine, tmp_path: Path) -> None:
    storage, told = LocalStorage(tmp_path), Told()
    ctx = context(seeded, storage, told)
    parameters = {"course_ids": [2, 1], "group_by": "month"}
    first = generate(ctx, report_type="financial-summary", parameters=parameters, fmt="csv", requested_by=1)
    # When the same request (the same ids in another order) comes again
    again = generate(
        ctx, report_type="financial-summary", fmt="csv", requested_by=2,
        parameters={"course_ids": [1, 2], "group_by": "month"},
    )  # fmt: skip
    # Then the stored report is served, nothing recomputed, and the second requester told
    assert again == {
        "report_id": first["report_id"],
        "status": "ready",
        "cached": True,
        "rows": first["rows"],
    }
    assert [m[0] for m in told.messages] == [1, 2] and len(storage.list("reports/")) == 1
    # And another format, or fresh, computes a new one
    other = generate(ctx, report_type="financial-summary", parameters=parameters, fmt="json", requested_by=1)
    fresh = generate(
        ctx, report_type="financial-summary", parameters=parameters, fmt="csv", requested_by=1, fresh=True
    )
    assert len({first["report_id"], other["report_id"], fresh["report_id"]}) == 3
    assert not other["cached"] and not fresh["cached"]
    # And with no cache window, nothing is served from the cache
    uncached = generate(
        context(seeded, storage, told, cache_seconds=0), report_type="financial-summary",
        parameters=parameters, fmt="csv", requested_by=1,
    )  # fmt: skip
    assert not uncached["cached"]


def test_a_cancelled_report_stops_and_stores_no_file(seeded: Engine, tmp_path: Path) -> None:
    # Given a report whose job an operator cancels while it runs
    storage, told = LocalStorage(tmp_path), Told()
    jobs = JobStore(seeded)
    message_id = f"cancel-{seeded.dialect.name}-{datetime.now(UTC).timestamp()}"
    jobs.mark_running(message_id, 1, actor_name="reports.generate_report", queue="reports")
    report = reports.create_pending(
        seeded, "student-progress", resolve_parameters("student-progress", {}), "csv", requested_by=1
    )

    def progress(percent: float) -> None:  # what actors.base.report_progress does
        told.progress.append(percent)
        if percent >= 5:
            cancel(seeded, message_id, by="test")
        if jobs.is_cancelled(message_id):
            raise ProcessingCancelledError("cancelled")

    # When it runs
    with pytest.raises(ProcessingCancelledError):
        generate(
            context(seeded, storage, told, progress=progress, message_id=message_id),
            report_type="student-progress", parameters={}, fmt="csv", requested_by=1, report_id=report.id,
        )  # fmt: skip
    # Then it stopped: no file, nobody told, the report shows cancelled
    stopped = reports.get(seeded, report.id)
    assert stopped is not None and stopped.status == "failed" and stopped.storage_key is None
    assert "cancelled" in (stopped.error or "")
    assert storage.list("reports/") == [] and told.messages == []
    assert report_view(seeded, stopped)["status"] == "cancelled"


@pytest.mark.parametrize(
    ("report_type", "parameters", "field"),
    [
        ("student-progress", {"start_date": "2026-13-01"}, "parameters.start_date"),
        (
            "student-progress",
            {"start_date": "2026-10-01", "end_date": "2026-09-01"},
            "end_date must not be before",
        ),
        ("course-performance", {"course_ids": [0]}, "parameters.course_ids.0"),
        ("financial-summary", {"group_by": "year"}, "parameters.group_by"),
        ("engagement-metrics", {"student_id": 3}, "parameters.student_id"),
        ("nonsense", {}, "type: unknown report type"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(
    report_type: str, parameters: dict[str, Any], field: str
) -> None:
    with pytest.raises(ContractError, match=field.replace(".", r"\.")):
        resolve_parameters(report_type, parameters)


def test_the_daily_cleanup_removes_an_expired_report_and_its_file(seeded: Engine, tmp_path: Path) -> None:
    # Given a ready report kept one day
    storage, told = LocalStorage(tmp_path), Told()
    made = generate(
        context(seeded, storage, told, keep_days=1), report_type="financial-summary", parameters={},
        fmt="json", requested_by=None, fresh=True,
    )  # fmt: skip
    report = reports.get(seeded, made["report_id"])
    assert report is not None and report.storage_key and storage.exists(report.storage_key)
    # When the cleanup runs two days later
    counts = maintenance.run_cleanup(
        seeded, storage, now=datetime.now(UTC) + timedelta(days=2), media_temp_dir=str(tmp_path)
    )
    # Then the file is gone and the report says expired (not served from the cache, not downloadable)
    expired = reports.get(seeded, report.id)
    assert counts["expired_reports"] >= 1 and expired is not None and expired.status == "expired"
    assert not storage.exists(report.storage_key) and expired.storage_key is None
