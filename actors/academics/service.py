"""The academics jobs' work, on the database (no Dramatiq here: the actors in ``actors.academics.actors``
wrap these functions; tests call them directly with a clock).

Notifications go through ``notify(user_id, template, context, key)``: the actors hand in a function
that enqueues ``notifications.notify_user`` with ``key`` as its idempotency key, so a job that runs
twice (a retry, a re-sent fire) never notifies twice.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, and_, case, func, select, update
from sqlalchemy.orm import Session

from actors.academics import grading
from store.models import (
    AccessLog,
    Assignment,
    Attendance,
    AttendanceRollup,
    Base,
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
from store.upsert import insert_if_absent, insert_many_if_absent, upsert

logger = logging.getLogger(__name__)

Notify = Callable[[int, str, dict[str, Any], str], None]
ATTENDANCE_REASON = "attendance"
#: The seed's attendance intervention: tier 2, with these strategies.
INTERVENTION_TIER = 2
INTERVENTION_STRATEGIES = ("Daily check-in", "Parent contact", "Attendance contract")
ROLLUP_KINDS = ("present", "absent", "late", "excused")
#: Interventions the nightly detection opens per transaction.
OPEN_BATCH = 500
#: The handlers' names in ``processed_events`` (their actors' names).
GRADE_HANDLER = "academics.on_grade_updated"
ATTENDANCE_HANDLER = "academics.on_attendance_marked"


def yesterday(now: datetime | None = None) -> date:
    return ((now or datetime.now(UTC)) - timedelta(days=1)).date()


def _table(model: type[Base]) -> Table:
    return model.__table__  # type: ignore[return-value]


# -- events -------------------------------------------------------------------------------------------


def claim_event(connection: Connection, handler: str, event_id: str) -> bool:
    """Record that ``handler`` applies event ``event_id``, in the caller's transaction; False if it
    did already (a redelivery: the caller changes nothing). The record commits with the effect, or
    neither does."""
    return insert_if_absent(
        connection,
        _table(ProcessedEvent),
        {"handler": handler, "event_id": event_id, "processed_at": datetime.now(UTC)},
        keys=["handler", "event_id"],
    )


# -- attendance ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttendanceRule:
    """The seed's intervention rule: absent on ``absences`` days or more within the last
    ``window_days`` days (a day counts once however many of its classes were missed), and no open
    attendance intervention: open one, tier 2, with the seed's strategies."""

    absences: int = 3
    window_days: int = 7

    @classmethod
    def from_settings(cls) -> AttendanceRule:
        from brokers.settings import get_settings

        settings = get_settings()
        return cls(settings.intervention_absences, settings.intervention_window_days)

    def window(self, last: date) -> tuple[date, date]:
        return last - timedelta(days=self.window_days - 1), last


def detect_attendance_interventions(
    engine: Engine, notify: Notify, *, rule: AttendanceRule | None = None, as_of: date | None = None
) -> dict[str, int]:
    """The nightly pass of the rule over every student, for the window ending ``as_of`` (default
    yesterday): open an intervention for each student it selects, and tell the course's instructor.
    Returns counts; a rerun opens nothing twice (the partial unique index of open interventions)."""
    rule = rule or AttendanceRule.from_settings()
    first, last = rule.window(as_of or yesterday())
    counts = {"students_at_risk": 0, "already_open": 0, "opened": 0, "notified": 0}
    with engine.connect() as connection:
        at_risk = _absent_days(connection, rule, first, last)
        already = set(connection.scalars(_open_attendance_interventions())) & at_risk.keys()
    counts["students_at_risk"], counts["already_open"] = len(at_risk), len(already)
    students = sorted(at_risk.keys() - already)
    for start in range(0, len(students), OPEN_BATCH):
        # A transaction per batch: one insert, one commit for many. A failure rolls the batch back;
        # the retry opens it again and its notifications carry the same keys.
        batch = {user_id: at_risk[user_id] for user_id in students[start : start + OPEN_BATCH]}
        with engine.begin() as connection:
            opened = _open_interventions(connection, notify, batch, rule, first, last)
        counts["already_open"] += len(batch) - len(opened)
        counts["opened"] += len(opened)
        counts["notified"] += sum(opened.values())
    return counts


def check_attendance_intervention(
    connection: Connection, notify: Notify, user_id: int, *, rule: AttendanceRule, as_of: date
) -> int | None:
    """The rule for one student (an ``attendance.marked`` handler), in the caller's transaction:
    the id of the intervention it opened, or None."""
    first, last = rule.window(as_of)
    if connection.scalar(_open_attendance_interventions().where(Intervention.user_id == user_id)):
        return None
    absent = _absent_days(connection, rule, first, last, user_id=user_id)
    if user_id not in absent:
        return None
    if not _open_interventions(connection, notify, absent, rule, first, last):
        return None
    return int(
        connection.execute(
            _open_attendance_interventions()
            .with_only_columns(Intervention.id)
            .where(Intervention.user_id == user_id)
        ).scalar_one()
    )


def _open_attendance_interventions() -> Select[Any]:
    return select(Intervention.user_id).where(
        Intervention.reason == ATTENDANCE_REASON, Intervention.status == "open"
    )


def _absent_days(
    connection: Connection, rule: AttendanceRule, first: date, last: date, *, user_id: int | None = None
) -> dict[int, int]:
    """Students absent on ``rule.absences`` days or more between ``first`` and ``last``: their days."""
    days = func.count(func.distinct(Attendance.day))
    statement = (
        select(Attendance.user_id, days)
        .where(Attendance.day.between(first, last), Attendance.status == "absent")
        .group_by(Attendance.user_id)
        .having(days >= rule.absences)
    )
    if user_id is not None:
        statement = statement.where(Attendance.user_id == user_id)
    return {user: int(count) for user, count in connection.execute(statement)}


def _open_interventions(
    connection: Connection,
    notify: Notify,
    absent: dict[int, int],
    rule: AttendanceRule,
    first: date,
    last: date,
) -> dict[int, bool]:
    """Open a tier-2 attendance intervention for each student of ``absent`` (id: days absent) who has
    none open, on the course they missed most, in one statement, and tell each course's instructor,
    before the caller commits: a failed commit rolls the interventions back and the retry notifies
    under the same keys (the student and the window's last day), which ``notify_user``'s ledger
    turns into one message each. Returns the students it opened one for: whether someone was told
    (not when the course has no instructor). A student whose intervention a concurrent run or
    handler opened a moment ago is skipped (the partial unique index)."""
    if not absent:
        return {}
    users = sorted(absent)
    misses = func.count().label("misses")
    worst: dict[int, int] = {}
    for user_id, course_id, _ in connection.execute(
        select(Attendance.user_id, Attendance.course_id, misses)
        .where(
            Attendance.user_id.in_(users),
            Attendance.day.between(first, last),
            Attendance.status == "absent",
        )
        .group_by(Attendance.user_id, Attendance.course_id)
        .order_by(Attendance.user_id, misses.desc(), Attendance.course_id)
    ):
        worst.setdefault(user_id, course_id)
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": user_id,
            "course_id": worst.get(user_id),
            "tier": INTERVENTION_TIER,
            "reason": ATTENDANCE_REASON,
            "status": "open",
            "opened_at": now,
            "strategies": list(INTERVENTION_STRATEGIES),
            "summary": f"{absent[user_id]} absences in the last {rule.window_days} days",
        }
        for user_id in users
    ]
    opened = set(
        insert_many_if_absent(
            connection, _table(Intervention), rows, keys=["user_id", "reason"], index_where="status = 'open'"
        )
    )
    told: dict[int, bool] = {}
    recipients = connection.execute(
        select(User.id, User.name, Course.title, Course.instructor_id)
        .join(Intervention, Intervention.user_id == User.id)
        .outerjoin(Course, Course.id == Intervention.course_id)
        .where(
            User.id.in_(sorted(opened)),
            Intervention.reason == ATTENDANCE_REASON,
            Intervention.status == "open",
        )
        .order_by(User.id)
    )
    for user_id, name, course, instructor_id in recipients:
        told[user_id] = instructor_id is not None
        if instructor_id is None:
            logger.warning("Attendance intervention of student %s: no course instructor to tell.", user_id)
            continue
        notify(
            instructor_id,
            "attendance_intervention",
            {
                "student_name": name,
                "absences": absent[user_id],
                "window_days": rule.window_days,
                "tier": INTERVENTION_TIER,
                "course": course or "",
                "strategies": list(INTERVENTION_STRATEGIES),
            },
            f"attendance-intervention:{user_id}:{last.isoformat()}",
        )
    return told


def apply_attendance_mark(
    engine: Engine,
    notify: Notify,
    event_id: str,
    *,
    user_id: int,
    course_id: int,
    day: date,
    status: str,
    previous_status: str | None,
    rule: AttendanceRule | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """The ``attendance.marked`` handler's work, in one transaction: adjust the day's roll-up of the
    course by +1 for ``status`` and -1 for ``previous_status`` (a correction), and apply the
    intervention rule to the student at once (window ending today). Once per event id: a
    redelivered event changes nothing. The +1/-1 commute, so marks applied out of order still sum
    to the day's counts (a row may go through -1 meanwhile); the nightly roll-up recounts."""
    rule = rule or AttendanceRule.from_settings()
    with engine.begin() as connection:
        if not claim_event(connection, ATTENDANCE_HANDLER, event_id):
            return {"duplicate": True}
        if status != previous_status:
            _adjust_rollup(connection, course_id, day, status, previous_status)
        opened = check_attendance_intervention(
            connection, notify, user_id, rule=rule, as_of=today or datetime.now(UTC).date()
        )
    return {"duplicate": False, "intervention_id": opened}


def _adjust_rollup(
    connection: Connection, course_id: int, day: date, status: str, previous: str | None
) -> None:
    table = _table(AttendanceRollup)
    values: dict[str, Any] = {"course_id": course_id, "day": day, **dict.fromkeys(ROLLUP_KINDS, 0)}
    values[status] = 1
    changes: dict[str, Any] = {status: table.c[status] + 1}
    if previous is not None:
        values[previous] = -1
        changes[previous] = table.c[previous] - 1
    upsert(connection, table, values, keys=["course_id", "day"], update=changes)


def roll_up_attendance(engine: Engine, day: date | None = None) -> dict[str, Any]:
    """Count each course's marks of ``day`` (default yesterday) into ``attendance_rollups`` (rerunnable;
    it replaces what the ``attendance.marked`` handler added up during the day by a recount)."""
    day = day or yesterday()
    statement = (
        select(
            Attendance.course_id,
            *(func.sum(case((Attendance.status == kind, 1), else_=0)).label(kind) for kind in ROLLUP_KINDS),
        )
        .where(Attendance.day == day)
        .group_by(Attendance.course_id)
    )
    table = _table(AttendanceRollup)
    courses = 0
    totals = dict.fromkeys(ROLLUP_KINDS, 0)
    with engine.begin() as connection:
        for row in connection.execute(statement).mappings():
            values = {kind: int(row[kind] or 0) for kind in ROLLUP_KINDS}
            upsert(
                connection,
                table,
                {"course_id": row["course_id"], "day": day, **values},
                keys=["course_id", "day"],
                update=values,
            )
            courses += 1
            for kind in ROLLUP_KINDS:
                totals[kind] += values[kind]
    return {"day": day.isoformat(), "courses": courses, **totals}


# -- IEPs ---------------------------------------------------------------------------------------------


def send_iep_review_reminders(
    engine: Engine, notify: Notify, *, milestones: list[int], as_of: date | None = None
) -> dict[str, int]:
    """Remind each IEP's coordinator as its review comes near: on the day ``milestones`` (days before
    the review is due; 90, 60 and 30) is reached. One reminder per IEP, review date and milestone
    (``iep_reminders``); a milestone missed (the job did not run that day) is reminded later, once,
    unless the next one was reached meanwhile; a review moved to a later date is reminded afresh.
    ``ieps.last_reminded_days`` records the last milestone reminded."""
    today = as_of or datetime.now(UTC).date()
    marks = sorted(set(milestones))
    counts = {"reminded": 0, "without_coordinator": 0}
    with engine.connect() as connection:
        ieps = connection.execute(
            select(Iep.id, Iep.user_id, Iep.coordinator_id, Iep.review_due_on, User.name)
            .outerjoin(User, User.id == Iep.user_id)
            .where(Iep.review_due_on >= today, Iep.review_due_on <= today + timedelta(days=marks[-1]))
            .order_by(Iep.id)
        ).all()
    for iep in ieps:
        days_left = (iep.review_due_on - today).days
        milestone = next(m for m in marks if days_left <= m)
        if iep.coordinator_id is None:
            counts["without_coordinator"] += 1
            continue
        with engine.begin() as connection:
            fresh = insert_if_absent(
                connection,
                _table(IepReminder),
                {"iep_id": iep.id, "review_due_on": iep.review_due_on, "days_before": milestone,
                 "sent_at": datetime.now(UTC)},
                keys=["iep_id", "review_due_on", "days_before"],
            )  # fmt: skip
            if not fresh:
                continue
            connection.execute(update(Iep).where(Iep.id == iep.id).values(last_reminded_days=milestone))
            # Enqueued before the commit: a failed commit leaves no row, and the retry's reminder
            # carries the same idempotency key, which the notification ledger sends once.
            notify(
                iep.coordinator_id,
                "iep_review_reminder",
                {
                    "student_name": iep.name or f"student {iep.user_id}",
                    "days_until_due": days_left,
                    "milestone_days": milestone,
                    "review_due_on": iep.review_due_on.isoformat(),
                },
                f"iep:{iep.id}:{iep.review_due_on.isoformat()}:due{milestone}",
            )
        counts["reminded"] += 1
    return counts


# -- grades -------------------------------------------------------------------------------------------


def record_course_grade(
    engine: Engine,
    notify: Notify,
    event_id: str,
    *,
    grade_id: int,
    user_id: int,
    course_id: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``grade.updated`` handler's work, in one transaction: recompute the student's course
    grade from their posted grades (``grading``), record it in ``course_grades``, and, when the
    grade is posted, tell the student (``grade_posted``) once per posting: the idempotency key is
    the grade and its ``posted_at``, so a regrade under the same posting tells nobody again, a new
    posting does. Once per event id; the notification is enqueued before the commit (a failed commit
    is retried under the same key, which ``notify_user``'s ledger sends once)."""
    at = now or datetime.now(UTC)
    with engine.begin() as connection:
        if not claim_event(connection, GRADE_HANDLER, event_id):
            return {"duplicate": True}
        result = compute_course_grade(connection, user_id, course_id, at)
        if result is None:
            connection.execute(
                _table(CourseGrade)
                .delete()
                .where(CourseGrade.user_id == user_id, CourseGrade.course_id == course_id)
            )
        else:
            values = {"percent": result.percent, "letter": result.letter, "computed_at": at}
            upsert(
                connection,
                _table(CourseGrade),
                {"user_id": user_id, "course_id": course_id, **values},
                keys=["user_id", "course_id"],
                update=values,
            )
        grade = connection.execute(
            select(Grade.points, Grade.posted_at, Assignment.title, Assignment.max_points, Course.title)
            .join(Assignment, Assignment.id == Grade.assignment_id)
            .join(Course, Course.id == Assignment.course_id)
            .where(Grade.id == grade_id, Grade.user_id == user_id)
        ).first()
        told = grade is not None and grade.posted_at is not None and grade.posted_at <= at
        if grade is not None and told:
            notify(
                user_id,
                "grade_posted",
                {
                    "course": grade[4],
                    "assignment": grade[2],
                    "score": _number(grade.points),
                    "max_score": _number(grade.max_points),
                    "course_percent": None if result is None else result.percent,
                    "course_letter": None if result is None else result.letter,
                },
                f"grade-posted:{grade_id}:{grade.posted_at.isoformat()}",
            )
    return {
        "duplicate": False,
        "percent": None if result is None else result.percent,
        "letter": None if result is None else result.letter,
        "graded": 0 if result is None else result.graded,
        "uncategorised": 0 if result is None else result.uncategorised,
        "notified": told,
    }


def _number(value: float) -> float | int:
    """Points as a person reads them: 70, not 70.0; 17.5 stays."""
    value = round(value, 2)
    return int(value) if value.is_integer() else value


def compute_course_grade(
    connection: Connection, user_id: int, course_id: int, now: datetime
) -> grading.CourseGradeResult | None:
    """The student's course grade from the grades posted by ``now`` (None: nothing posted yet)."""
    categories = {
        name: weight
        for name, weight in connection.execute(
            select(GradingCategory.name, GradingCategory.weight).where(GradingCategory.course_id == course_id)
        )
    }
    scale = grading.letter_scale(connection.scalar(select(Course.letter_scale).where(Course.id == course_id)))
    scores = [
        grading.Scored(category, points, max_points, weight)
        for category, points, max_points, weight in connection.execute(
            select(Assignment.category, Grade.points, Assignment.max_points, Assignment.weight)
            .join(Assignment, Assignment.id == Grade.assignment_id)
            .where(
                Assignment.course_id == course_id,
                Grade.user_id == user_id,
                Grade.posted_at.is_not(None),
                Grade.posted_at <= now,
            )
        )
    ]
    return grading.course_grade(scores, categories, scale)


def send_grade_posting_digest(
    engine: Engine, notify: Notify, *, hours: int = 24, now: datetime | None = None
) -> dict[str, int]:
    """Send each student one digest of their grades posted in the ``hours`` before ``now``."""
    end = now or datetime.now(UTC)
    start = end - timedelta(hours=hours)
    statement = (
        select(
            Grade.user_id,
            Grade.points,
            Grade.posted_at,
            Assignment.title,
            Assignment.max_points,
            Course.title,
        )
        .join(Assignment, Assignment.id == Grade.assignment_id)
        .join(Course, Course.id == Assignment.course_id)
        .where(Grade.posted_at > start, Grade.posted_at <= end)
        .order_by(Grade.user_id, Grade.posted_at)
    )
    by_student: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with engine.connect() as connection:
        for user_id, points, _posted, assignment, max_points, course in connection.execute(statement):
            by_student[user_id].append(
                {
                    "course": course,
                    "assignment": assignment,
                    "score": round(points, 2),
                    "max_score": max_points,
                }
            )
    for user_id, grades in by_student.items():
        notify(
            user_id,
            "daily_grade_digest",
            {"grades": grades, "date": end.date().isoformat()},
            f"grade-digest:{user_id}:{end:%Y-%m-%dT%H}",
        )
    return {"students": len(by_student), "grades": sum(len(g) for g in by_student.values())}


def performance_trends(
    engine: Engine, *, days: int = 30, stable_band: float = 0.25, now: datetime | None = None
) -> dict[str, Any]:
    """Each active student's trend: the least-squares slope of their grade percentages (points per
    day) over the last ``days``; ``up`` / ``down`` outside ±``stable_band``, else ``stable``."""
    end = now or datetime.now(UTC)
    start = end - timedelta(days=days)
    statement = (
        select(Grade.user_id, Grade.graded_at, Grade.points, Assignment.max_points)
        .join(Assignment, Assignment.id == Grade.assignment_id)
        .join(
            Enrollment,
            and_(Enrollment.user_id == Grade.user_id, Enrollment.course_id == Assignment.course_id),
        )
        .where(Grade.graded_at >= start, Grade.graded_at <= end, Enrollment.status == "active")
    )
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    with engine.connect() as connection:
        for user_id, graded_at, score, max_points in connection.execute(statement):
            if max_points:
                x = (graded_at - start).total_seconds() / 86_400
                points[user_id].append((x, 100.0 * score / max_points))
    students = []
    for user_id, series in sorted(points.items()):
        slope = _slope(series)
        direction = (
            "stable" if slope is None or abs(slope) <= stable_band else ("up" if slope > 0 else "down")
        )
        students.append(
            {
                "user_id": user_id,
                "grades": len(series),
                "average_percent": round(sum(y for _, y in series) / len(series), 2),
                "slope_per_day": None if slope is None else round(slope, 4),
                "direction": direction,
            }
        )
    summary = {d: sum(1 for s in students if s["direction"] == d) for d in ("up", "down", "stable")}
    return {"from": start.isoformat(), "to": end.isoformat(), "students": students, "summary": summary}


def _slope(series: list[tuple[float, float]]) -> float | None:
    if len(series) < 2:
        return None
    n = len(series)
    mean_x = sum(x for x, _ in series) / n
    mean_y = sum(y for _, y in series) / n
    spread = sum((x - mean_x) ** 2 for x, _ in series)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in series) / spread


def resource_usage(engine: Engine, *, days: int = 7, now: datetime | None = None) -> dict[str, Any]:
    """Per course: active learners, new enrollments, average progress, lessons with video; per lesson:
    views and distinct viewers from the access log (``resource`` ``lesson:<id>``, ``action`` ``view``)."""
    end = now or datetime.now(UTC)
    start = end - timedelta(days=days)
    with engine.connect() as connection:
        courses = {
            row.id: {
                "course_id": row.id,
                "code": row.code,
                "title": row.title,
                "active_learners": 0,
                "new_enrollments": 0,
                "average_progress": None,
                "lessons": 0,
                "lessons_with_media": 0,
                "views": 0,
                "viewers": 0,
            }
            for row in connection.execute(select(Course.id, Course.code, Course.title))
        }
        enrollment_stats = select(
            Enrollment.course_id,
            func.sum(case((Enrollment.status == "active", 1), else_=0)),
            func.sum(case((Enrollment.enrolled_at >= start, 1), else_=0)),
            func.avg(Enrollment.progress_percent),
        ).group_by(Enrollment.course_id)
        for course_id, active, new, progress in connection.execute(enrollment_stats):
            course = courses[course_id]
            course["active_learners"] = int(active or 0)
            course["new_enrollments"] = int(new or 0)
            course["average_progress"] = None if progress is None else round(float(progress), 1)
        lessons = {
            row.id: {
                "lesson_id": row.id,
                "course_id": row.course_id,
                "title": row.title,
                "views": 0,
                "viewers": 0,
            }
            for row in connection.execute(
                select(Lesson.id, Lesson.course_id, Lesson.title, Lesson.media_asset_id)
            )
        }
        for row in connection.execute(select(Lesson.course_id, Lesson.media_asset_id)):
            courses[row.course_id]["lessons"] += 1
            courses[row.course_id]["lessons_with_media"] += row.media_asset_id is not None
        views = (
            select(AccessLog.resource, func.count(), func.count(func.distinct(AccessLog.actor_user_id)))
            .where(AccessLog.at >= start, AccessLog.at <= end, AccessLog.action == "view")
            .where(AccessLog.resource.like("lesson:%"))
            .group_by(AccessLog.resource)
        )
        for resource, count, viewers in connection.execute(views):
            lesson_id = resource.split(":", 1)[1]
            lesson = lessons.get(int(lesson_id)) if lesson_id.isdigit() else None
            if lesson is None:
                continue
            lesson["views"], lesson["viewers"] = int(count), int(viewers)
            courses[lesson["course_id"]]["views"] += int(count)
            courses[lesson["course_id"]]["viewers"] += int(viewers)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "courses": list(courses.values()),
        "lessons": sorted(lessons.values(), key=lambda lesson: -lesson["views"]),
    }


# -- inactive users -------------------------------------------------------------------------------------


def notify_inactive_users(
    engine: Engine, notify: Notify, *, days: int = 14, now: datetime | None = None
) -> dict[str, int]:
    """Nudge each student inactive for ``days`` (never active: counted from sign-up), with the
    assignments of their active courses that fell due since they were last seen and that they have
    no grade for. One nudge per student per week (the idempotency key carries the ISO week)."""
    at = now or datetime.now(UTC)
    cutoff = at - timedelta(days=days)
    last_seen = func.coalesce(User.last_active_at, User.created_at)
    with Session(engine) as session:
        students = session.execute(
            select(User.id, User.last_active_at, User.created_at).where(
                User.role == "student", last_seen < cutoff
            )
        ).all()
        year, week, _ = at.isocalendar()
        for user_id, last_active_at, created_at in students:
            since = last_active_at or created_at
            graded = select(Grade.assignment_id).where(Grade.user_id == user_id)
            missed = session.execute(
                select(Assignment.title, Course.title, Assignment.due_at)
                .join(Course, Course.id == Assignment.course_id)
                .join(Enrollment, and_(Enrollment.course_id == Course.id, Enrollment.user_id == user_id))
                .where(
                    Enrollment.status == "active",
                    Assignment.due_at >= since,
                    Assignment.due_at <= at,
                    Assignment.id.not_in(graded),
                )
                .order_by(Assignment.due_at)
                .limit(10)
            ).all()
            notify(
                user_id,
                "inactive_student",
                {
                    "days_inactive": (at - since).days,
                    "last_active_on": last_active_at.date().isoformat() if last_active_at else None,
                    "missed_assignments": [
                        {"title": title, "course": course, "due_on": due.date().isoformat()}
                        for title, course, due in missed
                    ],
                },
                f"inactive:{user_id}:{year}-W{week:02d}",
            )
    return {"students": len(students)}


def as_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, default=str).encode()
