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
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from store.upsert import upsert

logger = logging.getLogger(__name__)

Notify = Callable[[int, str, dict[str, Any], str], None]
ATTENDANCE_REASON = "attendance"


def yesterday(now: datetime | None = None) -> date:
    return ((now or datetime.now(UTC)) - timedelta(days=1)).date()


# -- attendance ---------------------------------------------------------------------------------------


def detect_attendance_interventions(
    engine: Engine,
    notify: Notify,
    *,
    window_days: int = 14,
    tier1_absences: int = 3,
    tier2_absences: int = 6,
    as_of: date | None = None,
) -> dict[str, int]:
    """Open (or escalate to tier 2) one attendance intervention per student absent ``tier1_absences``
    times or more in a course within the window; tell the course's instructor. Returns counts."""
    last = as_of or yesterday()
    first = last - timedelta(days=window_days - 1)
    absences = func.count().label("absences")
    statement = (
        select(Attendance.user_id, Attendance.course_id, absences)
        .where(Attendance.day.between(first, last), Attendance.status == "absent")
        .group_by(Attendance.user_id, Attendance.course_id)
        .having(func.count() >= tier1_absences)
    )
    worst: dict[int, tuple[int, int]] = {}
    with engine.connect() as connection:
        for user_id, course_id, count in connection.execute(statement):
            if user_id not in worst or count > worst[user_id][1]:
                worst[user_id] = (course_id, int(count))
    counts = {"students_at_risk": len(worst), "opened": 0, "escalated": 0, "unchanged": 0, "notified": 0}
    for user_id, (course_id, count) in sorted(worst.items()):
        tier = 2 if count >= tier2_absences else 1
        try:
            with engine.begin() as connection:
                opened = _open_intervention(connection, user_id, course_id, tier)
        except IntegrityError:
            opened = "unchanged"  # another run opened it a moment ago (the partial unique index)
        if opened == "opened":
            counts["opened"] += 1
        elif opened == "escalated":
            counts["escalated"] += 1
        else:
            counts["unchanged"] += 1
            continue
        with Session(engine) as session:
            student = session.get(User, user_id)
            course = session.get(Course, course_id)
            instructor = session.get(User, course.instructor_id) if course and course.instructor_id else None
            intervention_id = session.scalar(
                select(Intervention.id).where(
                    Intervention.user_id == user_id,
                    Intervention.reason == ATTENDANCE_REASON,
                    Intervention.status == "open",
                )
            )
        if instructor is None or student is None:
            logger.warning("Course %s has no instructor to tell about student %s.", course_id, user_id)
            continue
        notify(
            instructor.id,
            "attendance_intervention",
            {
                "student_name": student.name,
                "absences": count,
                "window_days": window_days,
                "tier": tier,
                "course": course.title if course else "",
            },
            f"intervention:{intervention_id}:tier{tier}",
        )
        counts["notified"] += 1
    return counts


def _open_intervention(connection: Any, user_id: int, course_id: int, tier: int) -> str:
    """Open the student's attendance intervention, or raise its tier; say which (or 'unchanged')."""
    table: Any = Intervention.__table__
    existing = connection.execute(
        select(table.c.id, table.c.tier).where(
            table.c.user_id == user_id, table.c.reason == ATTENDANCE_REASON, table.c.status == "open"
        )
    ).first()
    if existing is None:
        connection.execute(
            table.insert().values(
                user_id=user_id,
                course_id=course_id,
                tier=tier,
                reason=ATTENDANCE_REASON,
                status="open",
                opened_at=datetime.now(UTC),
            )
        )
        return "opened"
    if tier > existing.tier:
        connection.execute(
            update(table).where(table.c.id == existing.id).values(tier=tier, course_id=course_id)
        )
        return "escalated"
    return "unchanged"


def roll_up_attendance(engine: Engine, day: date | None = None) -> dict[str, Any]:
    """Count each course's marks of ``day`` (default yesterday) into ``attendance_rollups`` (rerunnable)."""
    day = day or yesterday()
    kinds = ("present", "absent", "late", "excused")
    statement = (
        select(
            Attendance.course_id,
            *(func.sum(case((Attendance.status == kind, 1), else_=0)).label(kind) for kind in kinds),
        )
        .where(Attendance.day == day)
        .group_by(Attendance.course_id)
    )
    table: Any = AttendanceRollup.__table__
    courses = 0
    totals = dict.fromkeys(kinds, 0)
    with engine.begin() as connection:
        for row in connection.execute(statement).mappings():
            values = {kind: int(row[kind] or 0) for kind in kinds}
            upsert(
                connection,
                table,
                {"course_id": row["course_id"], "day": day, **values},
                keys=["course_id", "day"],
                update=values,
            )
            courses += 1
            for kind in kinds:
                totals[kind] += values[kind]
    return {"day": day.isoformat(), "courses": courses, **totals}


# -- IEPs ---------------------------------------------------------------------------------------------


def send_iep_review_reminders(
    engine: Engine, notify: Notify, *, milestones: list[int], as_of: date | None = None
) -> dict[str, int]:
    """Remind each IEP's coordinator on the days the IEP reaches a milestone (days since it started);
    a milestone missed (the job did not run that day) is still reminded later, once, unless a later
    one was reached; ``last_reminded_days`` records the last one sent."""
    today = as_of or datetime.now(UTC).date()
    marks = sorted(set(milestones))
    counts = {"reminded": 0, "without_coordinator": 0}
    with Session(engine) as session:
        ieps = session.scalars(
            select(Iep).where(Iep.starts_on <= today - timedelta(days=marks[0]), Iep.review_due_on >= today)
        ).all()
        for iep in ieps:
            age = (today - iep.starts_on).days
            reached = [m for m in marks if m <= age]
            milestone = reached[-1]
            if iep.last_reminded_days is not None and iep.last_reminded_days >= milestone:
                continue
            if iep.coordinator_id is None:
                counts["without_coordinator"] += 1
                continue
            student = session.get(User, iep.user_id)
            notify(
                iep.coordinator_id,
                "iep_review_reminder",
                {
                    "student_name": student.name if student else f"student {iep.user_id}",
                    "days_since_start": milestone,
                    "review_due_on": iep.review_due_on.isoformat(),
                },
                f"iep:{iep.id}:day{milestone}",
            )
            # Recorded after the notification is enqueued: a crash between the two re-sends the
            # same idempotency key, which the notification ledger turns into one email.
            session.execute(update(Iep).where(Iep.id == iep.id).values(last_reminded_days=milestone))
            session.commit()
            counts["reminded"] += 1
    return counts


# -- grades -------------------------------------------------------------------------------------------


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
