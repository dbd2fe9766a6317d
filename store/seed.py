"""Deterministic demo data: students, instructors, courses, enrollments, grades, attendance, IEPs.

``seed(engine, students=N, seed=S)`` writes the same data for the same ``N``, ``S`` and day: per 50
students an instructor, per 25 a course (at least 2), 5 lessons and 4 assignments per course (two
already due and graded), each student in 3 courses, 30 school days (weekdays) of attendance per
enrollment (mostly present; about 3% of students are often absent, to give the academics jobs
something to find), IEPs for 2% of students (a year long, some due for review in exactly 30, 60 or
90 days), and a payment for each enrollment in a paid course.
Student ``n`` has id ``n`` and email ``student{n}@example.edu``.

For the analytics reports: an enrolment at 90% progress or more is ``completed``, at 4% or less
``dropped``; each enrolment views its course's lessons in order, fewer students reaching each next
lesson (drop-off), with the seconds spent; about 4% of payments are refunded a few days later.
``graded_per_course=G`` (default 2) gives each course G past, graded assignments (and the two
future ones): ``graded_per_course=10`` makes 30 grade rows per student, the reports' benchmark.
These come from a second random stream, so the data above is the same as before they existed.
``attendance_only=True`` writes the users, courses, enrollments and attendance alone (the nightly
intervention detection's benchmark, ``bench.interventions``): faster, and its attendance differs
from the full seed's (no grades are drawn before it from the same stream).

Seeding runs in one transaction and only into an empty, migrated database: given a database that
already has users it refuses with ``AlreadySeededError`` and changes nothing, so it can never mix
demo rows into real data. To seed again, drop the database (or delete the SQLite file), run
``edujobs db upgrade``, then seed.

It is bulk work (``store.bulk``): 100,000 students (about 10 million rows) take about a minute on
PostgreSQL on a 2-core machine.
"""

from __future__ import annotations

import logging
import random
import time as clock
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, inspect, select, text

from contracts.errors import EdujobsError
from store import models
from store.bulk import load_rows
from store.models_analytics import LessonView

logger = logging.getLogger(__name__)

STUDENTS_PER_INSTRUCTOR = 50
STUDENTS_PER_COURSE = 25
COURSES_PER_STUDENT = 3
LESSONS_PER_COURSE = 5
ASSIGNMENT_DUE_DAYS = (-21, -7, 7, 21)  # relative to today; the past ones are graded
ATTENDANCE_DAYS = 30
IEP_SHARE = 0.02
AT_RISK_SHARE = 0.03

FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Katherine", "Edsger", "Barbara", "Donald", "Frances", "Tim", "Radia",
    "Linus", "Margaret", "Ken", "Hedy", "John", "Sophie", "Niklaus", "Shafi", "Leslie", "Anita",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Johnson", "Dijkstra", "Liskov", "Knuth", "Allen", "Perlman",
    "Torvalds", "Hamilton", "Thompson", "Lamarr", "Backus", "Wilson", "Wirth", "Goldwasser", "Borg",
)  # fmt: skip
TIME_ZONES = (
    ("America/New_York", "en"), ("America/Chicago", "en"), ("America/Denver", "en"),
    ("America/Los_Angeles", "es"), ("Europe/London", "en"), ("Europe/Paris", "fr"),
    ("Asia/Kolkata", "en"), ("Australia/Sydney", "en"), ("UTC", "en"),
)  # fmt: skip
SUBJECTS = (
    ("MATH", "Algebra"), ("PHYS", "Physics"), ("CHEM", "Chemistry"), ("BIO", "Biology"),
    ("HIST", "World History"), ("LIT", "Literature"), ("CS", "Programming"), ("ECON", "Economics"),
)  # fmt: skip
PRICES_CENTS = (0, 0, 4_900, 9_900, 19_900)


class SeedError(EdujobsError):
    """Raised when the database cannot take demo data (it has not been migrated)."""


class AlreadySeededError(SeedError):
    """Raised when the database already has users: seeding writes into an empty database only."""


@dataclass(frozen=True)
class SeedSummary:
    students: int
    instructors: int
    courses: int
    lessons: int
    assignments: int
    enrollments: int
    grades: int
    attendance: int
    ieps: int
    payments: int
    lesson_views: int = 0
    refunds: int = 0

    def __str__(self) -> str:
        return ", ".join(f"{f.name}={value:,}" for f, value in zip(fields(self), astuple(self), strict=True))


@dataclass(frozen=True)
class _Course:
    id: int
    starts_on: date
    price_cents: int
    due_assignments: tuple[tuple[int, datetime], ...]


def seed(
    engine: Engine,
    *,
    students: int,
    seed: int = 42,
    today: date | None = None,
    graded_per_course: int = 2,
    attendance_only: bool = False,
) -> SeedSummary:
    """Write demo data for ``students`` students into an empty database (see the module docstring)."""
    if students < 1:
        raise ValueError("students must be at least 1")
    if not 1 <= graded_per_course <= 60:
        raise ValueError("graded_per_course must be between 1 and 60")
    today = today or datetime.now(UTC).date()
    started = clock.perf_counter()
    with engine.begin() as connection:
        _check_empty(connection)
        seeder = _Seeder(connection, random.Random(seed), students, today)
        seeder.analytics_rng = random.Random(seed * 7919 + 1)
        seeder.due_days = _due_days(graded_per_course)
        summary = seeder.run_attendance_only() if attendance_only else seeder.run()
    logger.info("Seeded %s in %.1fs.", summary, clock.perf_counter() - started)
    return summary


def _check_empty(connection: Connection) -> None:
    if not inspect(connection).has_table(models.User.__tablename__):
        raise SeedError("the database has no tables: run `edujobs db upgrade` first, then seed")
    users = connection.execute(select(func.count()).select_from(models.User)).scalar_one()
    if users:
        raise AlreadySeededError(
            f"the database is already seeded ({users:,} users): seed writes demo data into an empty "
            "database only. To seed again, drop the database (or delete the SQLite file), run "
            "`edujobs db upgrade`, then seed."
        )


def _due_days(graded: int) -> tuple[int, ...]:
    if graded == 2:
        return ASSIGNMENT_DUE_DAYS
    # Spread the graded ones over the last weeks, every third day, the latest a week ago.
    return (*(-7 - 3 * k for k in range(graded - 1, -1, -1)), 7, 21)


def _table(model: type[models.Base]) -> Table:
    return model.__table__  # type: ignore[return-value]


class _Seeder:
    def __init__(self, connection: Connection, rng: random.Random, students: int, today: date) -> None:
        self.connection = connection
        self.rng = rng
        self.students = students
        self.instructors = max(1, students // STUDENTS_PER_INSTRUCTOR)
        self.course_count = max(2, students // STUDENTS_PER_COURSE)
        self.today = today
        self.now = datetime.combine(today, time(12, 0), UTC)
        self.at_risk: set[int] = set()
        self.courses: list[_Course] = []
        self.enrollments: list[tuple[int, _Course, datetime]] = []
        self.analytics_rng = random.Random(0)
        self.due_days: tuple[int, ...] = ASSIGNMENT_DUE_DAYS
        self.lesson_ids: dict[int, list[int]] = {}

    def run(self) -> SeedSummary:
        counts = {
            "students": self._load(models.User, USER_COLUMNS, self._students()),
            "instructors": self._load(models.User, USER_COLUMNS, self._staff()) - 1,
            "courses": self._load(models.Course, COURSE_COLUMNS, self._courses()),
            "lessons": self._load(models.Lesson, ("id", "course_id", "title", "position"), self._lessons()),
            "assignments": self._load(models.Assignment, ASSIGNMENT_COLUMNS, self._assignments()),
            "enrollments": self._load(models.Enrollment, ENROLLMENT_COLUMNS, self._enrollments()),
            "grades": self._load(models.Grade, GRADE_COLUMNS, self._grades()),
            "attendance": self._load(
                models.Attendance, ("user_id", "course_id", "day", "status"), self._attendance()
            ),
            "ieps": self._load(models.Iep, IEP_COLUMNS, self._ieps()),
            "payments": self._load(models.Payment, PAYMENT_COLUMNS, self._payments()),
            "refunds": self._load(models.Payment, REFUND_COLUMNS, self._refunds()),
            "lesson_views": self._load(LessonView, LESSON_VIEW_COLUMNS, self._lesson_views()),
        }
        self._advance_sequences((models.User, models.Course, models.Lesson, models.Assignment))
        return SeedSummary(**counts)

    def run_attendance_only(self) -> SeedSummary:
        counts = dict.fromkeys(f.name for f in fields(SeedSummary))
        counts.update(
            students=self._load(models.User, USER_COLUMNS, self._students()),
            instructors=self._load(models.User, USER_COLUMNS, self._staff()) - 1,
            courses=self._load(models.Course, COURSE_COLUMNS, self._courses()),
            enrollments=self._load(models.Enrollment, ENROLLMENT_COLUMNS, self._enrollments()),
            attendance=self._load(
                models.Attendance, ("user_id", "course_id", "day", "status"), self._attendance()
            ),
        )
        self._advance_sequences((models.User, models.Course))
        return SeedSummary(**{name: value or 0 for name, value in counts.items()})

    def _load(self, model: type[models.Base], columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> int:
        started = clock.perf_counter()
        big = model in (models.Enrollment, models.Grade, models.Attendance, LessonView) or (
            model is models.Payment and "kind" not in columns
        )
        count = load_rows(self.connection, _table(model), columns, rows, defer_indexes=big)
        logger.info(
            "Seeded %d rows of %s in %.1fs.", count, model.__tablename__, clock.perf_counter() - started
        )
        return count

    def _person(self, rng: random.Random) -> tuple[str, str, str]:
        zone, locale = rng.choice(TIME_ZONES)
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", zone, locale

    def _students(self) -> Iterator[Sequence[Any]]:
        rng, now = self.rng, self.now
        for n in range(1, self.students + 1):
            name, zone, locale = self._person(rng)
            tokens = [f"demo-fcm-token-{n}"] if rng.random() < 0.6 else []
            opted_out = ["sms"] if rng.random() < 0.05 else []
            inactive = rng.random() < 0.1  # the inactive-user job (14 days) finds these
            last_active = now - timedelta(days=rng.uniform(15, 45) if inactive else rng.uniform(0, 10))
            if rng.random() < AT_RISK_SHARE:
                self.at_risk.add(n)
            created = now - timedelta(days=rng.uniform(60, 400))
            phone = f"+1555{n:07d}"
            yield (
                n,
                f"student{n}@example.edu",
                phone,
                name,
                "student",
                zone,
                locale,
                tokens,
                opted_out,
                last_active,
                created,
            )

    def _staff(self) -> Iterator[Sequence[Any]]:
        rng, now, first_id = self.rng, self.now, self.students + 1
        for k in range(1, self.instructors + 1):
            name, zone, locale = self._person(rng)
            created = now - timedelta(days=400)
            yield (first_id + k - 1, f"instructor{k}@example.edu", f"+1556{k:07d}", name, "instructor",
                   zone, locale, [], [], now - timedelta(hours=k % 48), created)  # fmt: skip
        yield (first_id + self.instructors, "admin@example.edu", None, "Platform Admin", "admin", "UTC", "en",
               [], [], now, now - timedelta(days=500))  # fmt: skip

    def _courses(self) -> Iterator[Sequence[Any]]:
        rng = self.rng
        for c in range(1, self.course_count + 1):
            prefix, title = SUBJECTS[(c - 1) % len(SUBJECTS)]
            starts_on = self.today - timedelta(days=rng.randint(45, 75))
            price = rng.choice(PRICES_CENTS)
            instructor_id = self.students + 1 + (c - 1) % self.instructors
            self.courses.append(_Course(c, starts_on, price, ()))
            level = ("I", "II", "III")[(c - 1) // len(SUBJECTS) % 3]
            yield (c, f"{prefix}{c:05d}", f"{title} {level}", instructor_id, starts_on,
                   starts_on + timedelta(days=120), price)  # fmt: skip

    def _lessons(self) -> Iterator[Sequence[Any]]:
        lesson_id = 0
        for course in self.courses:
            for position in range(1, LESSONS_PER_COURSE + 1):
                lesson_id += 1
                self.lesson_ids.setdefault(course.id, []).append(lesson_id)
                yield (lesson_id, course.id, f"Lesson {position}", position)

    def _assignments(self) -> Iterator[Sequence[Any]]:
        assignment_id = 0
        for i, course in enumerate(self.courses):
            due: list[tuple[int, datetime]] = []
            for k, offset in enumerate(self.due_days, start=1):
                assignment_id += 1
                due_at = datetime.combine(self.today + timedelta(days=offset), time(23, 59), UTC)
                if due_at < self.now:
                    due.append((assignment_id, due_at))
                yield (assignment_id, course.id, f"Homework {k}", due_at, 100.0, 1 / len(self.due_days))
            self.courses[i] = _Course(course.id, course.starts_on, course.price_cents, tuple(due))

    def _enrollments(self) -> Iterator[Sequence[Any]]:
        rng, per_student = self.rng, min(COURSES_PER_STUDENT, len(self.courses))
        for user_id in range(1, self.students + 1):
            for course in sorted(rng.sample(self.courses, per_student), key=lambda c: c.id):
                enrolled_at = datetime.combine(course.starts_on, time(9, 0), UTC) - timedelta(
                    days=rng.randint(0, 14)
                )
                self.enrollments.append((user_id, course, enrolled_at))
                progress = rng.randint(0, 100)
                status = "completed" if progress >= 90 else "dropped" if progress <= 4 else "active"
                yield (user_id, course.id, enrolled_at, status, progress)

    def _grades(self) -> Iterator[Sequence[Any]]:
        gauss = self.rng.gauss
        for user_id, course, _ in self.enrollments:
            for assignment_id, due_at in course.due_assignments:
                points = round(min(100.0, max(0.0, gauss(78, 12))), 1)
                graded_at = due_at + timedelta(days=2)
                yield (assignment_id, user_id, points, graded_at, graded_at)

    def _school_days(self) -> list[date]:
        days: list[date] = []
        day = self.today
        while len(days) < ATTENDANCE_DAYS:
            day -= timedelta(days=1)
            if day.weekday() < 5:
                days.append(day)
        return sorted(days)

    def _attendance(self) -> Iterator[Sequence[Any]]:
        days, rnd, at_risk = self._school_days(), self.rng.random, self.at_risk
        for user_id, course, _ in self.enrollments:
            absent_below = 0.25 if user_id in at_risk else 0.035
            for day in days:
                x = rnd()
                if x < absent_below:
                    status = "absent"
                elif x < absent_below + 0.05:
                    status = "late"
                elif x < absent_below + 0.065:
                    status = "excused"
                else:
                    status = "present"
                yield (user_id, course.id, day, status)

    def _ieps(self) -> Iterator[Sequence[Any]]:
        rng = self.rng
        for user_id in range(1, self.students + 1):
            if rng.random() < IEP_SHARE:
                # Some reviews fall due in exactly 30, 60 or 90 days: today's IEP reminders have work.
                review_due_on = self.today + timedelta(days=rng.choice((30, 60, 90, rng.randint(1, 200))))
                coordinator = self.students + 1 + rng.randrange(self.instructors)
                yield (user_id, coordinator, review_due_on - timedelta(days=365), review_due_on)

    def _payments(self) -> Iterator[Sequence[Any]]:
        for user_id, course, enrolled_at in self.enrollments:
            if course.price_cents:
                yield (user_id, course.id, course.price_cents, "USD", enrolled_at)

    def _refunds(self) -> Iterator[Sequence[Any]]:
        rng = self.analytics_rng
        for user_id, course, enrolled_at in self.enrollments:
            if course.price_cents and rng.random() < REFUND_SHARE:
                refunded_at = enrolled_at + timedelta(days=rng.randint(1, 20), hours=rng.randint(0, 8))
                yield (user_id, course.id, course.price_cents, "USD", refunded_at, "refund")

    def _lesson_views(self) -> Iterator[Sequence[Any]]:
        rng, days = self.analytics_rng, self._school_days()
        first, span = days[0], (days[-1] - days[0]).days
        for user_id, course, _ in self.enrollments:
            offset = rng.randrange(span + 1)
            for position, lesson_id in enumerate(self.lesson_ids[course.id]):
                if rng.random() >= VIEW_REACH[position]:
                    break  # dropped off: no later lesson either
                viewed_at = datetime.combine(first + timedelta(days=offset), time(15, 0), UTC) + timedelta(
                    minutes=rng.randint(0, 360)
                )
                seconds = max(30, int(rng.gauss(900, 300)))
                yield (user_id, course.id, lesson_id, viewed_at, seconds, rng.random() < 0.8)
                offset = min(span, offset + rng.randint(0, 3))

    def _advance_sequences(self, tables: Sequence[type[models.Base]]) -> None:
        # Rows were written with explicit ids: PostgreSQL's sequences must move past them.
        if self.connection.dialect.name != "postgresql":
            return
        for model in tables:
            name = model.__tablename__
            self.connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
            )


USER_COLUMNS = ("id", "email", "phone", "name", "role", "time_zone", "locale", "push_tokens", "opted_out",
                "last_active_at", "created_at")  # fmt: skip
COURSE_COLUMNS = ("id", "code", "title", "instructor_id", "starts_on", "ends_on", "price_cents")
ASSIGNMENT_COLUMNS = ("id", "course_id", "title", "due_at", "max_points", "weight")
ENROLLMENT_COLUMNS = ("user_id", "course_id", "enrolled_at", "status", "progress_percent")
GRADE_COLUMNS = ("assignment_id", "user_id", "points", "graded_at", "posted_at")
IEP_COLUMNS = ("user_id", "coordinator_id", "starts_on", "review_due_on")
PAYMENT_COLUMNS = ("user_id", "course_id", "amount_cents", "currency", "paid_at")
REFUND_COLUMNS = (*PAYMENT_COLUMNS, "kind")
LESSON_VIEW_COLUMNS = ("user_id", "course_id", "lesson_id", "viewed_at", "seconds_spent", "completed")
#: The share of enrolments that view lesson 1, and of those at lesson k that go on to lesson k+1.
VIEW_REACH = (0.95, 0.85, 0.8, 0.75, 0.7)
REFUND_SHARE = 0.04
