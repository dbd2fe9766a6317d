"""End to end: ``grade.updated`` and ``attendance.marked`` published by another process (this one)
run the academics handlers in a ``dramatiq actors`` worker: the course grade, the day's roll-up and
the intervention land in the database, the student's ``grade_posted`` and the instructor's
``attendance_intervention`` emails at the fake SendGrid, once each even when the event is
published twice with one id. One worker (the real actors) serves the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from actors.academics.service import ATTENDANCE_HANDLER, GRADE_HANDLER
from brokers.client import Client
from contracts.events import handler_message_id
from store.db import make_engine
from store.migrate import upgrade
from store.models import (
    Assignment,
    Attendance,
    AttendanceRollup,
    Course,
    CourseGrade,
    Delivery,
    Grade,
    GradingCategory,
    Intervention,
    JobRecord,
    User,
)
from tests.amqp import depth
from tests.fakes.sendgrid import FakeSendGrid
from tests.services import postgres_database, rabbitmq_vhost, services_environment
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"
INSTRUCTOR, ADA, ALAN = 1, 2, 3
ALGEBRA = 10
TODAY = datetime.now(UTC).date()


class Setup:
    def __init__(self, url: str, engine: Engine, sendgrid: FakeSendGrid, client: Client) -> None:
        self.url, self.engine, self.sendgrid, self.client = url, engine, sendgrid, client

    def mails_to(self, address: str) -> list[dict[str, Any]]:
        return [m for m in self.sendgrid.mails() if m["personalizations"][0]["to"][0]["email"] == address]

    def summary(self, handler: str, event_id: str) -> dict[str, Any] | None:
        """The result the handler's last run of the event returned (its job record)."""
        with Session(self.engine) as session:
            job = session.get(JobRecord, handler_message_id(event_id, handler))
            return job.result_summary if job is not None and job.state == "succeeded" else None

    def publish_twice(self, name: str, payload: dict[str, Any], handler: str) -> str:
        """Publish the event, wait for its handler to apply it, publish it again with the same id,
        and wait for the handler to have run that one too (and found it applied)."""
        event_id = self.client.publish_event(name, payload)
        wait_until(
            lambda: (self.summary(handler, event_id) or {}).get("duplicate") is False,
            what=f"{handler} applied {name}",
        )
        assert self.client.publish_event(name, payload, event_id=event_id) == event_id
        wait_until(
            lambda: self.summary(handler, event_id) == {"duplicate": True},
            what=f"{handler} ran the second publication of {name}",
        )
        return event_id

    def email_rows(self, user_id: int) -> list[tuple[str, str]]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Delivery).where(Delivery.user_id == user_id, Delivery.channel == "email")
            )
            return [(d.idempotency_key, d.status) for d in rows]


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    sendgrid = FakeSendGrid().start()
    with rabbitmq_vhost() as url, postgres_database() as database:
        upgrade(database)
        engine = make_engine(database)
        reachable = {
            "channel_order": ["email"],
            "quiet_hours_start": time(0, 0),
            "quiet_hours_end": time(0, 0),
        }
        with Session(engine) as session:
            session.add_all(
                [
                    User(
                        id=INSTRUCTOR, email="ines@example.edu", name="Ines", role="instructor", **reachable
                    ),
                    User(id=ADA, email="ada@example.edu", name="Ada Lovelace", role="student", **reachable),
                    User(id=ALAN, email="alan@example.edu", name="Alan Turing", role="student", **reachable),
                ]
            )
            session.flush()
            session.add(
                Course(
                    id=ALGEBRA,
                    code="MATH-1",
                    title="Algebra",
                    instructor_id=INSTRUCTOR,
                    starts_on=TODAY - timedelta(days=60),
                    ends_on=TODAY + timedelta(days=60),
                )
            )
            session.commit()
        env = services_environment(url, database, sendgrid)
        worker = WorkerProcess(env, threads=2).wait_ready()
        client = Client(url, signing_key=KEY)
        try:
            yield Setup(url, engine, sendgrid, client)
        finally:
            client.close()
            worker.stop()
            engine.dispose()
            sendgrid.stop()


def test_a_grade_update_records_the_course_grade_and_tells_the_student_once(setup: Setup) -> None:
    # Given Algebra graded as homework 40 and exams 60, and Ada's posted grades: homework 9/10, exam 70/100
    posted = datetime.now(UTC) - timedelta(minutes=5)
    with Session(setup.engine) as session:
        session.add_all(
            [
                GradingCategory(course_id=ALGEBRA, name="homework", weight=40),
                GradingCategory(course_id=ALGEBRA, name="exams", weight=60),
            ]
        )
        session.add(Assignment(id=20, course_id=ALGEBRA, title="Homework 1", due_at=posted, max_points=10,
                               category="homework"))  # fmt: skip
        session.add(Assignment(id=21, course_id=ALGEBRA, title="Midterm", due_at=posted, max_points=100,
                               category="exams"))  # fmt: skip
        session.flush()
        session.add(Grade(id=30, assignment_id=20, user_id=ADA, points=9, posted_at=posted))
        session.add(Grade(id=31, assignment_id=21, user_id=ADA, points=70, posted_at=posted))
        session.commit()
    # When the gradebook publishes grade.updated for the midterm twice, with one event id
    payload = {"grade_id": 31, "user_id": ADA, "course_id": ALGEBRA, "assignment_id": 21}
    setup.publish_twice("grade.updated", payload, GRADE_HANDLER)
    # Then Ada's course grade is recorded: 0.4 x 90 + 0.6 x 70 = 78 -> C
    with Session(setup.engine) as session:
        grade = session.scalars(select(CourseGrade).where(CourseGrade.user_id == ADA)).one()
    assert (grade.course_id, grade.percent, grade.letter) == (ALGEBRA, 78.0, "C")
    # ...and she gets one grade_posted email, recorded once in the ledger
    wait_until(lambda: setup.mails_to("ada@example.edu"), what="Ada's grade email at SendGrid")
    wait_until(lambda: "sent" in dict(setup.email_rows(ADA)).values(), what="the email's ledger row")
    [mail] = setup.mails_to("ada@example.edu")
    assert "Algebra" in mail["subject"]
    text = next(c["value"] for c in mail["content"] if c["type"] == "text/plain")
    assert "Midterm: 70 / 100" in text
    assert setup.email_rows(ADA) == [(f"grade-posted:31:{posted.isoformat()}:email", "sent")]
    assert depth(setup.url, f"{GRADE_HANDLER}.XQ") == 0


def test_attendance_marks_roll_up_once_and_the_third_day_absent_opens_an_intervention(setup: Setup) -> None:
    # Given Alan absent in Algebra two days ago and three days ago, and marked absent today
    with Session(setup.engine) as session:
        for days_ago, status in [(3, "absent"), (2, "absent"), (1, "present"), (0, "absent")]:
            session.add(Attendance(user_id=ALAN, course_id=ALGEBRA, day=TODAY - timedelta(days=days_ago),
                                   status=status))  # fmt: skip
        session.commit()
    # When the school publishes today's mark twice, with one event id
    mark = {"user_id": ALAN, "course_id": ALGEBRA, "day": TODAY.isoformat(), "status": "absent"}
    first = setup.publish_twice("attendance.marked", mark, ATTENDANCE_HANDLER)
    # Then today's roll-up counts one absence (not two)...
    assert rollup(setup.engine, TODAY) == (0, 1, 0, 0)
    # ...and the third day absent in 7 opened one tier-2 intervention with the seed's strategies
    with Session(setup.engine) as session:
        [intervention] = session.scalars(select(Intervention).where(Intervention.user_id == ALAN)).all()
    assert (intervention.tier, intervention.reason, intervention.status, intervention.course_id) == (
        2,
        "attendance",
        "open",
        ALGEBRA,
    )
    assert intervention.strategies == ["Daily check-in", "Parent contact", "Attendance contract"]
    assert setup.summary(ATTENDANCE_HANDLER, first) == {"duplicate": True}
    # ...whose instructor got one email about it
    wait_until(lambda: setup.mails_to("ines@example.edu"), what="the instructor's email at SendGrid")
    wait_until(lambda: "sent" in dict(setup.email_rows(INSTRUCTOR)).values(), what="its ledger row")
    [mail] = setup.mails_to("ines@example.edu")
    assert mail["subject"] == "Attendance: Alan Turing missed 3 days in 7"
    assert setup.email_rows(INSTRUCTOR) == [(f"attendance-intervention:{ALAN}:{TODAY}:email", "sent")]
    # When today's mark is corrected to excused (a new event, naming the previous status)
    with Session(setup.engine) as session:
        session.merge(Attendance(user_id=ALAN, course_id=ALGEBRA, day=TODAY, status="excused"))
        session.commit()
    setup.publish_twice("attendance.marked", {**mark, "status": "excused", "previous_status": "absent"},
                        ATTENDANCE_HANDLER)  # fmt: skip
    # Then the roll-up moves the mark, once; the intervention stays the only one, nobody is told again
    assert rollup(setup.engine, TODAY) == (0, 0, 0, 1)
    with Session(setup.engine) as session:
        assert len(session.scalars(select(Intervention)).all()) == 1
    assert len(setup.mails_to("ines@example.edu")) == 1
    assert depth(setup.url, f"{ATTENDANCE_HANDLER}.XQ") == 0


def rollup(engine: Engine, day: date) -> tuple[int, int, int, int]:
    with Session(engine) as session:
        row = session.scalars(
            select(AttendanceRollup).where(AttendanceRollup.course_id == ALGEBRA, AttendanceRollup.day == day)
        ).one()
        return row.present, row.absent, row.late, row.excused
