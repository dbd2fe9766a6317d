"""The academics jobs and event handlers' work on PostgreSQL and SQLite: interventions, roll-ups (the
nightly recount and the incremental one of ``attendance.marked``), course grades (``grade.updated``),
IEP reminders, grade digests, trends, resource usage and inactive students, each run twice to show a
rerun (or a redelivered event) changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from actors.academics import service
from actors.academics.grading import LetterScaleError
from actors.academics.service import AttendanceRule
from brokers.settings import get_settings
from store.db import make_engine
from store.migrate import upgrade
from store.models import (
    AccessLog,
    Assignment,
    Attendance,
    AttendanceRollup,
    Course,
    CourseGrade,
    Enrollment,
    Grade,
    GradingCategory,
    Iep,
    IepReminder,
    Intervention,
    Lesson,
    ProcessedEvent,
    User,
)
from store.seed import seed

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'academics.db'}"
    return str(request.getfixturevalue("database_url"))


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        session.add_all(
            [
                User(id=1, name="Ines Instructor", role="instructor", email="ines@example.edu"),
                User(id=2, name="Ada Lovelace", role="student", email="ada@example.edu", last_active_at=NOW),
                User(
                    id=3,
                    name="Alan Turing",
                    role="student",
                    email="alan@example.edu",
                    last_active_at=NOW - timedelta(days=20),
                    created_at=NOW - timedelta(days=200),
                ),
                User(
                    id=4, name="Grace Hopper", role="student", email="grace@example.edu", last_active_at=NOW
                ),
                User(id=5, name="Carla Coordinator", role="admin", email="carla@example.edu"),
            ]
        )
        session.flush()
        session.add_all(
            [
                Course(
                    id=10,
                    code="MATH-1",
                    title="Algebra",
                    instructor_id=1,
                    starts_on=date(2026, 9, 1),
                    ends_on=date(2027, 6, 30),
                ),
                Course(
                    id=11,
                    code="PHYS-1",
                    title="Physics",
                    instructor_id=1,
                    starts_on=date(2026, 9, 1),
                    ends_on=date(2027, 6, 30),
                ),
            ]
        )
        session.flush()
        for user_id in (2, 3, 4):
            session.add(Enrollment(user_id=user_id, course_id=10, enrolled_at=NOW - timedelta(days=60)))
        session.add(
            Enrollment(user_id=3, course_id=11, enrolled_at=NOW - timedelta(days=3), progress_percent=40)
        )
        session.commit()
    yield engine
    engine.dispose()


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, dict[str, Any], str]] = []

    def __call__(self, user_id: int, template: str, context: dict[str, Any], key: str) -> None:
        self.sent.append((user_id, template, context, key))


def mark(engine: Engine, user_id: int, course_id: int, statuses: list[str], last: date) -> None:
    with Session(engine) as session:
        for offset, status in enumerate(reversed(statuses)):
            session.merge(
                Attendance(
                    user_id=user_id, course_id=course_id, day=last - timedelta(days=offset), status=status
                )
            )
        session.commit()


def test_three_days_absent_in_seven_open_one_tier_2_intervention_with_the_seeds_strategies(
    engine: Engine,
) -> None:
    last = TODAY - timedelta(days=1)
    mark(engine, 2, 10, ["present"] * 10, last)
    # Alan: absent on 3 of the last 7 days (twice in Algebra, once in Physics)
    mark(engine, 3, 10, ["absent", "present", "absent", "late", "present", "present", "present"], last)
    mark(engine, 3, 11, ["present", "present", "present", "present", "absent", "present", "present"], last)
    # Grace: 3 absences, but two on one day (a day counts once) and one 8 days back (outside the window)
    mark(
        engine,
        4,
        10,
        ["absent", "present", "present", "present", "present", "present", "absent", "present"],
        last,
    )
    mark(engine, 4, 11, ["present"] * 6 + ["absent", "present"], last)
    outbox = Outbox()
    first = service.detect_attendance_interventions(engine, outbox, rule=AttendanceRule(3, 7), as_of=last)
    assert first == {"students_at_risk": 1, "already_open": 0, "opened": 1, "notified": 1}
    [(to, template, context, key)] = outbox.sent
    assert (to, template, key) == (1, "attendance_intervention", f"attendance-intervention:3:{last}")
    assert context["student_name"] == "Alan Turing" and context["absences"] == 3 and context["tier"] == 2
    assert context["course"] == "Algebra"  # the course missed most
    with Session(engine) as session:
        [intervention] = session.scalars(select(Intervention)).all()
    assert (intervention.user_id, intervention.course_id, intervention.tier) == (3, 10, 2)
    assert intervention.strategies == ["Daily check-in", "Parent contact", "Attendance contract"]
    assert intervention.summary == "3 absences in the last 7 days" and intervention.status == "open"
    # Running again (more absences since) opens nothing and tells no one: one is open
    mark(engine, 3, 10, ["absent"], last)
    again = service.detect_attendance_interventions(engine, outbox, rule=AttendanceRule(3, 7), as_of=last)
    assert again == {"students_at_risk": 1, "already_open": 1, "opened": 0, "notified": 0}
    assert len(outbox.sent) == 1
    # Once it is closed, the rule applies again
    with Session(engine) as session:
        session.execute(update(Intervention).values(status="closed", closed_at=NOW))
        session.commit()
    third = service.detect_attendance_interventions(engine, outbox, rule=AttendanceRule(3, 7), as_of=last)
    assert third["opened"] == 1 and len(outbox.sent) == 2


def test_the_threshold_and_window_are_settings_with_the_seeds_defaults(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert AttendanceRule.from_settings() == AttendanceRule(absences=3, window_days=7)
    last = TODAY - timedelta(days=1)
    mark(
        engine,
        4,
        10,
        ["absent", "present", "present", "present", "present", "present", "absent", "present"],
        last,
    )
    monkeypatch.setenv("EDUJOBS_INTERVENTION_ABSENCES", "2")
    monkeypatch.setenv("EDUJOBS_INTERVENTION_WINDOW_DAYS", "14")
    get_settings.cache_clear()
    assert AttendanceRule.from_settings() == AttendanceRule(absences=2, window_days=14)
    counts = service.detect_attendance_interventions(engine, Outbox(), as_of=last)
    assert counts["opened"] == 1  # Grace's two absences 8 days apart, now within 14 days


def test_attendance_roll_up_counts_each_course_and_reruns_in_place(engine: Engine) -> None:
    day = TODAY - timedelta(days=1)
    mark(engine, 2, 10, ["present"], day)
    mark(engine, 3, 10, ["absent"], day)
    mark(engine, 4, 10, ["late"], day)
    mark(engine, 3, 11, ["excused"], day)
    assert service.roll_up_attendance(engine, day) == {
        "day": day.isoformat(),
        "courses": 2,
        "present": 1,
        "absent": 1,
        "late": 1,
        "excused": 1,
    }
    mark(engine, 4, 10, ["present"], day)  # a late correction
    service.roll_up_attendance(engine, day)
    with Session(engine) as session:
        rows = {
            r.course_id: (r.present, r.absent, r.late, r.excused)
            for r in session.scalars(select(AttendanceRollup))
        }
    assert rows == {10: (2, 1, 0, 0), 11: (0, 0, 0, 1)}


def test_iep_reminders_count_back_from_the_review_due_date_once_per_milestone(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all(
            [
                # due in 90 days: the 90-day reminder today
                Iep(id=1, user_id=2, coordinator_id=5, starts_on=TODAY - timedelta(days=275),
                    review_due_on=TODAY + timedelta(days=90)),
                # due in 91 days: nothing yet; tomorrow its 90-day reminder
                Iep(id=2, user_id=3, coordinator_id=5, starts_on=TODAY - timedelta(days=30),
                    review_due_on=TODAY + timedelta(days=91)),
                # due in 45 days and never reminded (the job missed day 60): the 60-day one, not the 90
                Iep(id=3, user_id=4, coordinator_id=5, starts_on=TODAY - timedelta(days=320),
                    review_due_on=TODAY + timedelta(days=45)),
                # nobody to remind
                Iep(id=4, user_id=4, coordinator_id=None, starts_on=TODAY - timedelta(days=300),
                    review_due_on=TODAY + timedelta(days=60)),
                # started 30 days ago, due in a year: the old rule reminded it today, the seed's does not
                Iep(id=5, user_id=2, coordinator_id=5, starts_on=TODAY - timedelta(days=30),
                    review_due_on=TODAY + timedelta(days=335)),
                # overdue: no reminder
                Iep(id=6, user_id=3, coordinator_id=5, starts_on=TODAY - timedelta(days=400),
                    review_due_on=TODAY - timedelta(days=1)),
            ]
        )  # fmt: skip
        session.commit()
    outbox = Outbox()
    remind = service.send_iep_review_reminders
    assert remind(engine, outbox, milestones=[90, 60, 30], as_of=TODAY) == {
        "reminded": 2,
        "without_coordinator": 1,
    }
    assert [(to, template, key) for to, template, _, key in outbox.sent] == [
        (5, "iep_review_reminder", f"iep:1:{TODAY + timedelta(days=90)}:due90"),
        (5, "iep_review_reminder", f"iep:3:{TODAY + timedelta(days=45)}:due60"),
    ]
    assert outbox.sent[0][2] == {
        "student_name": "Ada Lovelace",
        "days_until_due": 90,
        "milestone_days": 90,
        "review_due_on": (TODAY + timedelta(days=90)).isoformat(),
    }
    # Rerun the same day: nothing. The next day: IEP 2 reaches 90 days; IEP 1 was reminded already
    assert remind(engine, outbox, milestones=[90, 60, 30], as_of=TODAY)["reminded"] == 0
    remind(engine, outbox, milestones=[90, 60, 30], as_of=TODAY + timedelta(days=1))
    assert [key for *_, key in outbox.sent][2:] == [f"iep:2:{TODAY + timedelta(days=91)}:due90"]
    # 30 days later IEP 1 reaches 60, then 30; each once
    for offset in range(2, 62):
        remind(engine, outbox, milestones=[90, 60, 30], as_of=TODAY + timedelta(days=offset))
    ieps_1 = [key.rsplit(":", 1)[1] for *_, key in outbox.sent if key.startswith("iep:1:")]
    assert ieps_1 == ["due90", "due60", "due30"]
    with Session(engine) as session:
        reminders = session.scalars(select(IepReminder).where(IepReminder.iep_id == 1)).all()
        assert sorted(r.days_before for r in reminders) == [30, 60, 90]
        assert session.get(Iep, 1).last_reminded_days == 30  # type: ignore[union-attr]
    # A review moved to a later date is reminded afresh at its milestones
    later = TODAY + timedelta(days=62 + 90)
    with Session(engine) as session:
        session.execute(update(Iep).where(Iep.id == 1).values(review_due_on=later))
        session.commit()
    remind(engine, outbox, milestones=[90, 60, 30], as_of=TODAY + timedelta(days=62))
    assert outbox.sent[-1][3] == f"iep:1:{later}:due90"


def test_the_grade_digest_tells_each_student_the_grades_posted_in_the_last_day(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(
            Assignment(id=20, course_id=10, title="Quiz 1", due_at=NOW - timedelta(days=3), max_points=20)
        )
        session.add(
            Assignment(id=21, course_id=10, title="Quiz 2", due_at=NOW - timedelta(days=2), max_points=20)
        )
        session.flush()
        session.add_all(
            [
                Grade(assignment_id=20, user_id=2, points=18, posted_at=NOW - timedelta(hours=3)),
                Grade(assignment_id=21, user_id=2, points=15, posted_at=NOW - timedelta(hours=20)),
                Grade(assignment_id=20, user_id=3, points=9, posted_at=NOW - timedelta(hours=30)),  # too old
                Grade(assignment_id=20, user_id=4, points=12, posted_at=None),  # not posted
            ]
        )
        session.commit()
    outbox = Outbox()
    assert service.send_grade_posting_digest(engine, outbox, hours=24, now=NOW) == {
        "students": 1,
        "grades": 2,
    }
    [(to, template, context, _key)] = outbox.sent
    assert (to, template) == (2, "daily_grade_digest")
    assert [g["assignment"] for g in context["grades"]] == ["Quiz 2", "Quiz 1"]
    assert context["grades"][1] == {"course": "Algebra", "assignment": "Quiz 1", "score": 18, "max_score": 20}


def test_trends_follow_the_slope_of_each_students_grades(engine: Engine) -> None:
    with Session(engine) as session:
        for n in range(4):
            session.add(Assignment(id=30 + n, course_id=10, title=f"Test {n}", due_at=NOW, max_points=100))
        session.flush()
        for n in range(4):
            at = NOW - timedelta(days=28 - 7 * n)
            session.add(Grade(assignment_id=30 + n, user_id=2, points=60 + 10 * n, graded_at=at))  # rising
            session.add(Grade(assignment_id=30 + n, user_id=3, points=90 - 10 * n, graded_at=at))  # falling
            session.add(Grade(assignment_id=30 + n, user_id=4, points=80 + (n % 2), graded_at=at))  # flat
        session.commit()
    result = service.performance_trends(engine, days=30, now=NOW)
    by_user = {s["user_id"]: s for s in result["students"]}
    assert {u: s["direction"] for u, s in by_user.items()} == {2: "up", 3: "down", 4: "stable"}
    assert by_user[2]["slope_per_day"] == pytest.approx(10 / 7, rel=1e-3)
    assert result["summary"] == {"up": 1, "down": 1, "stable": 1}


def test_resource_usage_counts_learners_and_lesson_views(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all(
            [
                Lesson(id=40, course_id=10, title="Intro", position=1),
                Lesson(id=41, course_id=10, title="Next", position=2),
            ]
        )
        session.flush()
        for viewer, lesson, days_ago in [(2, 40, 1), (3, 40, 2), (2, 40, 3), (2, 41, 1), (4, 41, 10)]:
            session.add(
                AccessLog(
                    user_id=viewer,
                    actor_user_id=viewer,
                    resource=f"lesson:{lesson}",
                    action="view",
                    at=NOW - timedelta(days=days_ago),
                )
            )
        session.commit()
    result = service.resource_usage(engine, days=7, now=NOW)
    courses = {c["code"]: c for c in result["courses"]}
    assert courses["MATH-1"]["active_learners"] == 3 and courses["MATH-1"]["lessons"] == 2
    assert courses["PHYS-1"]["new_enrollments"] == 1 and courses["PHYS-1"]["average_progress"] == 40
    lessons = {lesson["lesson_id"]: lesson for lesson in result["lessons"]}
    assert (lessons[40]["views"], lessons[40]["viewers"]) == (3, 2)
    assert (lessons[41]["views"], lessons[41]["viewers"]) == (1, 1)  # the 10-day-old view is outside the week
    assert courses["MATH-1"]["views"] == 4


def test_inactive_students_get_one_nudge_a_week_with_their_missed_assignments(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Assignment(id=50, course_id=10, title="Essay", due_at=NOW - timedelta(days=5)))
        session.add(Assignment(id=51, course_id=10, title="Old quiz", due_at=NOW - timedelta(days=40)))
        session.commit()
    outbox = Outbox()
    assert service.notify_inactive_users(engine, outbox, days=14, now=NOW) == {"students": 1}
    [(to, template, context, key)] = outbox.sent
    assert (to, template) == (3, "inactive_student")
    assert context["days_inactive"] == 20
    assert context["missed_assignments"] == [
        {"title": "Essay", "course": "Algebra", "due_on": (NOW - timedelta(days=5)).date().isoformat()}
    ]
    assert key == "inactive:3:2026-W47"


def test_an_attendance_mark_adjusts_the_days_roll_up_once_per_event_in_any_order(engine: Engine) -> None:
    day = TODAY - timedelta(days=1)

    def apply(event_id: str, user_id: int, status: str, previous: str | None) -> dict[str, Any]:
        return service.apply_attendance_mark(
            engine, Outbox(), event_id, user_id=user_id, course_id=10, day=day, status=status,
            previous_status=previous, rule=AttendanceRule(3, 7), today=TODAY,
        )  # fmt: skip

    def rollup() -> tuple[int, int, int, int]:
        with Session(engine) as session:
            row = session.scalars(select(AttendanceRollup).where(AttendanceRollup.course_id == 10)).one()
            return row.present, row.absent, row.late, row.excused

    assert apply("e1", 2, "present", None) == {"duplicate": False, "intervention_id": None}
    assert apply("e1", 2, "present", None) == {"duplicate": True}  # redelivered: not counted twice
    assert rollup() == (1, 0, 0, 0)
    # Grace is marked late, corrected to absent, then to excused; the corrections arrive first
    apply("e4", 4, "excused", "absent")
    apply("e3", 4, "absent", "late")
    apply("e2", 4, "late", None)
    apply("e3", 4, "absent", "late")
    assert rollup() == (1, 0, 0, 1)
    apply("e5", 3, "present", "present")  # the same status again: no change
    assert rollup() == (1, 0, 0, 1)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ProcessedEvent)) == 5
    # The nightly recount agrees with the marks in the table
    mark(engine, 2, 10, ["present"], day)
    mark(engine, 4, 10, ["excused"], day)
    service.roll_up_attendance(engine, day)
    assert rollup() == (1, 0, 0, 1)


def test_an_attendance_mark_applies_the_intervention_rule_to_its_student_at_once(engine: Engine) -> None:
    outbox = Outbox()
    rule = AttendanceRule(3, 7)
    mark(engine, 3, 10, ["absent", "present", "absent"], TODAY)

    def apply(event_id: str) -> dict[str, Any]:
        return service.apply_attendance_mark(
            engine, outbox, event_id, user_id=3, course_id=10, day=TODAY, status="absent",
            previous_status=None, rule=rule, today=TODAY,
        )  # fmt: skip

    assert apply("a1")["intervention_id"] is None  # 2 days absent
    mark(engine, 3, 11, ["absent", "present"], TODAY)  # a third day (yesterday, in Physics)
    opened = apply("a2")["intervention_id"]
    assert opened is not None and apply("a3")["intervention_id"] is None  # one open: no second
    assert apply("a2") == {"duplicate": True}
    with Session(engine) as session:
        [intervention] = session.scalars(select(Intervention)).all()
    assert (intervention.id, intervention.user_id, intervention.tier) == (opened, 3, 2)
    assert [(to, template, key) for to, template, _, key in outbox.sent] == [
        (1, "attendance_intervention", f"attendance-intervention:3:{TODAY}")
    ]
    # The nightly pass finds it open
    nightly = service.detect_attendance_interventions(engine, outbox, rule=rule, as_of=TODAY)
    assert nightly == {"students_at_risk": 1, "already_open": 1, "opened": 0, "notified": 0}


def grading_course(engine: Engine, *, scale: list[dict[str, Any]] | None = None) -> None:
    """Algebra: homework 40, exams 60; two homeworks (one weighted double), an exam, an uncategorised
    quiz; Ada's grades, all posted but the second exam's."""
    with Session(engine) as session:
        session.execute(update(Course).where(Course.id == 10).values(letter_scale=scale))
        session.add_all(
            [
                GradingCategory(course_id=10, name="homework", weight=40),
                GradingCategory(course_id=10, name="exams", weight=60),
                GradingCategory(course_id=10, name="projects", weight=50),  # nothing graded: left out
            ]
        )
        for id_, category, max_points, weight in [
            (60, "homework", 10, 1), (61, "homework", 20, 2), (62, "exams", 100, 1),
            (63, "exams", 100, 1), (64, None, 10, 1), (65, "Exams ", 10, 1),
        ]:  # fmt: skip
            session.add(Assignment(id=id_, course_id=10, title=f"Work {id_}", due_at=NOW, category=category,
                                   max_points=max_points, weight=weight))  # fmt: skip
        session.flush()
        for grade_id, assignment_id, points, posted in [
            (1, 60, 10, NOW - timedelta(hours=1)), (2, 61, 14, NOW - timedelta(hours=1)),
            (3, 62, 80, NOW - timedelta(minutes=1)), (4, 63, 20, None), (5, 64, 0, NOW), (6, 65, 0, NOW),
        ]:  # fmt: skip
            session.add(
                Grade(id=grade_id, assignment_id=assignment_id, user_id=2, points=points, posted_at=posted)
            )
        session.commit()


def test_a_grade_update_records_the_weighted_course_grade_and_tells_the_student_once_per_posting(
    engine: Engine,
) -> None:
    grading_course(engine)
    outbox = Outbox()

    def updated(event_id: str, grade_id: int) -> dict[str, Any]:
        return service.record_course_grade(engine, outbox, event_id, grade_id=grade_id, user_id=2,
                                           course_id=10, now=NOW)  # fmt: skip

    result = updated("g1", 3)
    # homework: (1 x 10/10 + 2 x 14/20) / 3 = 80%; exams: 80% (the unposted exam does not count);
    # course: (40 x 80 + 60 x 80) / 100 = 80 -> B. The quiz without a category and the one whose
    # category is misspelt are left out.
    assert result == {"duplicate": False, "percent": 80.0, "letter": "B", "graded": 3, "uncategorised": 2,
                      "notified": True}  # fmt: skip
    [(to, template, context, key)] = outbox.sent
    assert (to, template) == (2, "grade_posted")
    assert context == {"course": "Algebra", "assignment": "Work 62", "score": 80, "max_score": 100,
                       "course_percent": 80.0, "course_letter": "B"}  # fmt: skip
    assert key == f"grade-posted:3:{(NOW - timedelta(minutes=1)).isoformat()}"
    assert updated("g1", 3) == {"duplicate": True} and len(outbox.sent) == 1
    # A regrade under the same posting: recomputed, nobody told again (same key)
    with Session(engine) as session:
        session.execute(update(Grade).where(Grade.id == 3).values(points=95))
        session.commit()
    regraded = updated("g2", 3)
    assert (regraded["percent"], regraded["letter"]) == (89.0, "B")
    assert outbox.sent[-1][3] == key
    # The second exam posted: a new posting, told; the course grade follows
    with Session(engine) as session:
        session.execute(update(Grade).where(Grade.id == 4).values(posted_at=NOW, points=100))
        session.commit()
    posted = updated("g3", 4)
    assert (posted["percent"], posted["letter"]) == (90.5, "A")
    assert outbox.sent[-1][1:] == (
        "grade_posted",
        {"course": "Algebra", "assignment": "Work 63", "score": 100, "max_score": 100,
         "course_percent": 90.5, "course_letter": "A"},
        f"grade-posted:4:{NOW.isoformat()}",
    )  # fmt: skip
    with Session(engine) as session:
        row = session.scalars(select(CourseGrade)).one()
    assert (row.user_id, row.course_id, row.percent, row.letter) == (2, 10, 90.5, "A")


def test_the_course_letter_scale_and_unposted_grades(engine: Engine) -> None:
    scale = [{"letter": "P", "min_percent": 85}, {"letter": "NP", "min_percent": 0}]
    grading_course(engine, scale=scale)
    outbox = Outbox()
    result = service.record_course_grade(engine, outbox, "s1", grade_id=4, user_id=2, course_id=10, now=NOW)
    assert (result["letter"], result["notified"]) == ("NP", False) and outbox.sent == []  # grade 4 unposted
    with Session(engine) as session:
        session.execute(update(Grade).values(posted_at=None))
        session.commit()
    nothing = service.record_course_grade(engine, outbox, "s2", grade_id=1, user_id=2, course_id=10, now=NOW)
    assert nothing["percent"] is None and outbox.sent == []
    with Session(engine) as session:
        assert session.scalars(select(CourseGrade)).all() == []  # nothing posted: no course grade
        session.execute(update(Course).values(letter_scale=[{"letter": "A", "min_percent": 50}]))
        session.execute(update(Grade).values(posted_at=NOW))
        session.commit()
    with pytest.raises(LetterScaleError, match="min_percent 0"):
        service.record_course_grade(engine, outbox, "s3", grade_id=1, user_id=2, course_id=10, now=NOW)
    with Session(engine) as session:  # the failed event was not recorded: its retry applies it
        assert session.get(ProcessedEvent, (service.GRADE_HANDLER, "s3")) is None


def test_a_course_without_categories_weighs_its_assignments_by_their_weight(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Assignment(id=70, course_id=11, title="Lab", due_at=NOW, max_points=50, weight=1))
        session.add(Assignment(id=71, course_id=11, title="Final", due_at=NOW, max_points=100, weight=3))
        session.flush()
        session.add(Grade(id=10, assignment_id=70, user_id=3, points=50, posted_at=NOW))
        session.add(Grade(id=11, assignment_id=71, user_id=3, points=60, posted_at=NOW))
        session.commit()
    result = service.record_course_grade(
        engine, Outbox(), "n1", grade_id=11, user_id=3, course_id=11, now=NOW
    )
    assert (result["percent"], result["letter"], result["graded"]) == (70.0, "C", 2)  # (100 + 3 x 60) / 4


def test_one_event_delivered_to_two_workers_at_once_counts_once(engine: Engine) -> None:
    # Two deliveries of each event run at the same moment (a redelivery racing the first attempt)
    day = TODAY - timedelta(days=1)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def deliver(event_id: str, user_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(
                service.apply_attendance_mark(
                    engine,
                    Outbox(),
                    event_id,
                    user_id=user_id,
                    course_id=10,
                    day=day,
                    status="absent",
                    previous_status=None,
                    rule=AttendanceRule(3, 7),
                    today=TODAY,
                )
            )
        except BaseException as e:
            errors.append(e)

    for n, user_id in enumerate((2, 3, 4)):
        threads = [threading.Thread(target=deliver, args=(f"race-{n}", user_id)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert sorted(r["duplicate"] for r in results) == [False] * 3 + [True] * 3
    with Session(engine) as session:
        row = session.scalars(select(AttendanceRollup)).one()
    assert (row.present, row.absent) == (0, 3)


def test_opening_skips_a_student_whose_intervention_was_opened_a_moment_ago(engine: Engine) -> None:
    # As when the nightly run and a handler reach the same students at once
    mark(engine, 3, 10, ["absent"] * 3, TODAY)
    mark(engine, 4, 11, ["absent"] * 3, TODAY)
    with Session(engine) as session:
        session.add(Intervention(user_id=3, tier=2, reason="attendance"))
        session.commit()
    outbox = Outbox()
    rule = AttendanceRule(3, 7)
    with engine.begin() as connection:
        told = service._open_interventions(connection, outbox, {3: 3, 4: 3}, rule, *rule.window(TODAY))
    assert told == {4: True}
    assert [(to, context["student_name"], context["course"]) for to, _, context, _ in outbox.sent] == [
        (1, "Grace Hopper", "Physics")
    ]
    with Session(engine) as session:
        assert sorted((i.user_id, i.course_id) for i in session.scalars(select(Intervention))) == [
            (3, None),
            (4, 11),
        ]


def test_the_seeds_ieps_give_todays_reminders_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    upgrade(url)
    engine = make_engine(url)
    seed(engine, students=500, seed=42, today=TODAY)
    with Session(engine) as session:
        due_in = [(iep.review_due_on - TODAY).days for iep in session.scalars(select(Iep))]
    outbox = Outbox()
    counts = service.send_iep_review_reminders(engine, outbox, milestones=[90, 60, 30], as_of=TODAY)
    assert counts["reminded"] == len(outbox.sent) == sum(days in (30, 60, 90) for days in due_in) > 0
    engine.dispose()
