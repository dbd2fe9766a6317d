"""The academics jobs on PostgreSQL: interventions, roll-ups, IEP reminders, grade digests, trends,
resource usage and inactive students, each run twice to show a rerun changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from actors.academics import service
from store.db import make_engine
from store.migrate import upgrade
from store.models import (
    AccessLog,
    Assignment,
    Attendance,
    AttendanceRollup,
    Course,
    Enrollment,
    Grade,
    Iep,
    Intervention,
    Lesson,
    User,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
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


def test_attendance_interventions_open_once_escalate_and_tell_the_instructor(engine: Engine) -> None:
    last = TODAY - timedelta(days=1)
    mark(engine, 2, 10, ["present"] * 10, last)
    mark(
        engine, 3, 10, ["absent", "present", "absent", "late", "absent", "present"], last
    )  # 3 absences: tier 1
    mark(engine, 4, 10, ["absent"] * 2 + ["present"] * 8, last)  # 2: none
    outbox = Outbox()
    first = service.detect_attendance_interventions(engine, outbox, as_of=last)
    assert first == {"students_at_risk": 1, "opened": 1, "escalated": 0, "unchanged": 0, "notified": 1}
    [(to, template, context, key)] = outbox.sent
    assert (to, template) == (1, "attendance_intervention")
    assert context["student_name"] == "Alan Turing" and context["absences"] == 3 and context["tier"] == 1
    # Running again changes nothing and tells no one
    again = service.detect_attendance_interventions(engine, outbox, as_of=last)
    assert again["opened"] == 0 and again["unchanged"] == 1 and len(outbox.sent) == 1
    # Three more absences escalate it to tier 2, and the instructor is told again
    mark(engine, 3, 10, ["absent"] * 3, last + timedelta(days=3))
    escalated = service.detect_attendance_interventions(engine, outbox, as_of=last + timedelta(days=3))
    assert escalated["escalated"] == 1 and outbox.sent[-1][2]["tier"] == 2 and outbox.sent[-1][3] != key
    with Session(engine) as session:
        [intervention] = session.scalars(select(Intervention)).all()
    assert (intervention.user_id, intervention.tier, intervention.status) == (3, 2, "open")


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


def test_iep_reminders_go_out_once_per_milestone(engine: Engine) -> None:
    with Session(engine) as session:
        session.add_all(
            [
                Iep(
                    id=1,
                    user_id=2,
                    coordinator_id=5,
                    starts_on=TODAY - timedelta(days=30),
                    review_due_on=TODAY + timedelta(days=335),
                ),
                Iep(
                    id=2,
                    user_id=3,
                    coordinator_id=5,
                    starts_on=TODAY - timedelta(days=29),
                    review_due_on=TODAY + timedelta(days=336),
                ),
                Iep(
                    id=3,
                    user_id=4,
                    coordinator_id=None,
                    starts_on=TODAY - timedelta(days=61),
                    review_due_on=TODAY + timedelta(days=300),
                ),
            ]
        )
        session.commit()
    outbox = Outbox()
    assert service.send_iep_review_reminders(engine, outbox, milestones=[30, 60, 90], as_of=TODAY) == {
        "reminded": 1,
        "without_coordinator": 1,
    }
    [(to, template, context, key)] = outbox.sent
    assert (to, template, key) == (5, "iep_review_reminder", "iep:1:day30")
    assert context == {
        "student_name": "Ada Lovelace",
        "days_since_start": 30,
        "review_due_on": (TODAY + timedelta(days=335)).isoformat(),
    }
    # The next day: IEP 1 was reminded already, IEP 2 reaches 30 days
    service.send_iep_review_reminders(
        engine, outbox, milestones=[30, 60, 90], as_of=TODAY + timedelta(days=1)
    )
    assert [key for *_, key in outbox.sent] == ["iep:1:day30", "iep:2:day30"]


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
