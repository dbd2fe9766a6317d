"""The five analytics reports as SQL aggregates (``sections``): what each figure means is here.

Conventions, the same in every report: the period is ``start_date`` to ``end_date`` (UTC days,
inclusive). Grades count when their assignment was due in the period (a missed assignment is one
due in the period, and already past, without a grade); a grade's percentage is points over the
assignment's maximum. Enrolments count when made before the period ends; the completion rate is
the share of those ``completed``. Lesson views, time spent and active students (distinct viewers)
count in the period; attendance days in the period (present or late count as attended).
Payments and refunds count by the day they were made. Money is in the currency's units.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, case, distinct, func, literal, null, select, union_all
from sqlalchemy.sql.elements import ColumnElement

from actors.reports.sections import Column, Period, ReportSpec, Section, period
from store.models import Assignment, Attendance, Course, Enrollment, Grade, Lesson, Payment, User
from store.models_analytics import LessonView


def build_report(report_type: str, parameters: dict[str, Any], dialect: str) -> ReportSpec:
    """The report ``report_type`` for resolved ``parameters`` (``contracts.report_params``)."""
    builders = {
        "course-performance": course_performance,
        "student-progress": student_progress,
        "engagement-metrics": engagement_metrics,
        "financial-summary": financial_summary,
        "instructor-analytics": instructor_analytics,
    }
    when = Period(
        datetime.fromisoformat(parameters["start_date"]).date(),
        datetime.fromisoformat(parameters["end_date"]).date(),
    )
    return builders[report_type](parameters, when, dialect)


def _zero(value: Any) -> ColumnElement[Any]:
    return func.coalesce(value, 0)


def _rate(part: Any, whole: Any) -> ColumnElement[Any]:
    """100 * part / whole, NULL when whole is 0."""
    rate: ColumnElement[Any] = 100.0 * part / func.nullif(whole, 0)
    return rate


def _percent_of_max() -> ColumnElement[float]:
    return Grade.points * 100.0 / Assignment.max_points


def _due_cutoff(when: Period) -> datetime:
    return min(when.end, datetime.now(UTC))


# Per course ---------------------------------------------------------------------------------------

COURSE_COLUMNS = (
    Column("course_id", "Course id"),
    Column("code", "Code", "text"),
    Column("title", "Title", "text"),
    Column("instructor_id", "Instructor id"),
    Column("enrolments", "Enrolments"),
    Column("completed", "Completed"),
    Column("dropped", "Dropped"),
    Column("completion_rate", "Completion %", "pct"),
    Column("average_progress", "Avg progress %", "pct"),
    Column("grades", "Grades"),
    Column("average_grade", "Avg grade %", "pct"),
    Column("lesson_views", "Lesson views"),
    Column("active_students", "Active students"),
    Column("minutes_spent", "Minutes spent", "float"),
)


def _course_filter(course_ids: list[int] | None, instructor_id: int | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if course_ids:
        where.append(Course.id.in_(course_ids))
    if instructor_id is not None:
        where.append(Course.instructor_id == instructor_id)
    return where


def _course_rows(when: Period, where: list[ColumnElement[bool]]) -> Select[Any]:
    enrolments = (
        select(
            Enrollment.course_id,
            func.count().label("enrolments"),
            func.sum(case((Enrollment.status == "completed", 1), else_=0)).label("completed"),
            func.sum(case((Enrollment.status == "dropped", 1), else_=0)).label("dropped"),
            func.avg(Enrollment.progress_percent).label("average_progress"),
        )
        .where(Enrollment.enrolled_at < when.end)
        .group_by(Enrollment.course_id)
        .subquery()
    )
    grades = (
        select(
            Assignment.course_id,
            func.count().label("grades"),
            func.avg(_percent_of_max()).label("average_grade"),
        )
        .join(Grade, Grade.assignment_id == Assignment.id)
        .where(Assignment.due_at >= when.start, Assignment.due_at < when.end)
        .group_by(Assignment.course_id)
        .subquery()
    )
    views = (
        select(
            LessonView.course_id,
            func.count().label("lesson_views"),
            func.count(distinct(LessonView.user_id)).label("active_students"),
            (func.sum(LessonView.seconds_spent) / 60.0).label("minutes_spent"),
        )
        .where(LessonView.viewed_at >= when.start, LessonView.viewed_at < when.end)
        .group_by(LessonView.course_id)
        .subquery()
    )
    return (
        select(
            Course.id.label("course_id"),
            Course.code,
            Course.title,
            Course.instructor_id,
            _zero(enrolments.c.enrolments).label("enrolments"),
            _zero(enrolments.c.completed).label("completed"),
            _zero(enrolments.c.dropped).label("dropped"),
            _rate(enrolments.c.completed, enrolments.c.enrolments).label("completion_rate"),
            enrolments.c.average_progress,
            _zero(grades.c.grades).label("grades"),
            grades.c.average_grade,
            _zero(views.c.lesson_views).label("lesson_views"),
            _zero(views.c.active_students).label("active_students"),
            _zero(views.c.minutes_spent).label("minutes_spent"),
        )
        .outerjoin(enrolments, enrolments.c.course_id == Course.id)
        .outerjoin(grades, grades.c.course_id == Course.id)
        .outerjoin(views, views.c.course_id == Course.id)
        .where(*where)
        .order_by(Course.id)
    )


GRADE_BANDS = (("grade_a", "A (90+)", 90, None), ("grade_b", "B (80-89)", 80, 90),
               ("grade_c", "C (70-79)", 70, 80), ("grade_d", "D (60-69)", 60, 70),
               ("grade_f", "F (<60)", None, 60))  # fmt: skip


def _band(low: float | None, high: float | None) -> ColumnElement[int]:
    percent = _percent_of_max()
    tests = [t for t in (percent >= low if low is not None else None,
                         percent < high if high is not None else None) if t is not None]  # fmt: skip
    return func.sum(case((and_(*tests), 1), else_=0))


def course_performance(parameters: dict[str, Any], when: Period, dialect: str) -> ReportSpec:
    where = _course_filter(parameters.get("course_ids"), parameters.get("instructor_id"))
    courses = _course_rows(when, where)
    distribution = (
        select(
            Course.id,
            Course.code,
            *(_band(low, high).label(key) for key, _, low, high in GRADE_BANDS),
        )
        .join(Assignment, Assignment.course_id == Course.id)
        .join(Grade, Grade.assignment_id == Assignment.id)
        .where(Assignment.due_at >= when.start, Assignment.due_at < when.end, *where)
        .group_by(Course.id, Course.code)
        .order_by(Course.id)
    )
    trend = _course_trend(when, parameters["group_by"], dialect, where)
    rows = courses.subquery()
    summary = select(
        func.count().label("courses"),
        _zero(func.sum(rows.c.enrolments)).label("enrolments"),
        _rate(func.sum(rows.c.completed), func.sum(rows.c.enrolments)).label("completion_rate"),
        (func.sum(rows.c.average_grade * rows.c.grades) / func.nullif(func.sum(rows.c.grades), 0)).label(
            "average_grade"
        ),
        _zero(func.sum(rows.c.lesson_views)).label("lesson_views"),
        _zero(func.sum(rows.c.minutes_spent)).label("minutes_spent"),
    )
    return ReportSpec(
        "course-performance",
        "Course performance",
        (
            Column("courses", "Courses"),
            Column("enrolments", "Enrolments"),
            Column("completion_rate", "Completion %", "pct"),
            Column("average_grade", "Average grade %", "pct"),
            Column("lesson_views", "Lesson views"),
            Column("minutes_spent", "Minutes spent", "float"),
        ),
        summary,
        (
            Section("courses", "Courses", COURSE_COLUMNS, courses),
            Section(
                "grade_distribution",
                "Grade distribution",
                (
                    Column("course_id", "Course id"),
                    Column("code", "Code", "text"),
                    *(Column(key, label) for key, label, _, _ in GRADE_BANDS),
                ),
                distribution,
            ),
            Section("trend", "Trend", TREND_COLUMNS, trend, chart=("period", "lesson_views")),
        ),
    )


TREND_COLUMNS = (
    Column("period", "Period", "text"),
    Column("grades", "Grades"),
    Column("average_grade", "Avg grade %", "pct"),
    Column("lesson_views", "Lesson views"),
    Column("active_students", "Active students"),
)


def _course_trend(when: Period, grouping: str, dialect: str, where: list[ColumnElement[bool]]) -> Select[Any]:
    graded = (
        select(
            period(Assignment.due_at, grouping, dialect).label("p"),
            _percent_of_max().label("grade"),
            null().label("user_id"),
            literal(0).label("viewed"),
        )
        .join(Grade, Grade.assignment_id == Assignment.id)
        .join(Course, Course.id == Assignment.course_id)
        .where(Assignment.due_at >= when.start, Assignment.due_at < when.end, *where)
    )
    viewed = (
        select(
            period(LessonView.viewed_at, grouping, dialect).label("p"),
            null().label("grade"),
            LessonView.user_id,
            literal(1).label("viewed"),
        )
        .join(Course, Course.id == LessonView.course_id)
        .where(LessonView.viewed_at >= when.start, LessonView.viewed_at < when.end, *where)
    )
    both = union_all(graded, viewed).subquery()
    return (
        select(
            both.c.p.label("period"),
            func.count(both.c.grade).label("grades"),
            func.avg(both.c.grade).label("average_grade"),
            func.sum(both.c.viewed).label("lesson_views"),
            func.count(distinct(both.c.user_id)).label("active_students"),
        )
        .group_by(both.c.p)
        .order_by(both.c.p)
    )


# Per student --------------------------------------------------------------------------------------

STUDENT_COLUMNS = (
    Column("student_id", "Student id"),
    Column("student_name", "Student", "text"),
    Column("course_id", "Course id"),
    Column("code", "Course", "text"),
    Column("status", "Status", "text"),
    Column("progress", "Progress %", "pct"),
    Column("grades", "Grades"),
    Column("average_grade", "Avg grade %", "pct"),
    Column("assignments_due", "Assignments due"),
    Column("missed_assignments", "Missed"),
    Column("attendance_days", "Attendance days"),
    Column("attendance_rate", "Attendance %", "pct"),
    Column("absences", "Absences"),
    Column("lesson_views", "Lesson views"),
    Column("minutes_spent", "Minutes spent", "float"),
)


def student_progress(parameters: dict[str, Any], when: Period, dialect: str) -> ReportSpec:
    student_id, course_ids = parameters.get("student_id"), parameters.get("course_ids")
    cutoff = _due_cutoff(when)

    def only(user_column: Any, course_column: Any) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if student_id is not None:
            where.append(user_column == student_id)
        if course_ids:
            where.append(course_column.in_(course_ids))
        return where

    due = (
        select(Assignment.course_id, func.count().label("due"))
        .where(Assignment.due_at >= when.start, Assignment.due_at < cutoff)
        .group_by(Assignment.course_id)
        .subquery()
    )
    grades = (
        select(
            Grade.user_id,
            Assignment.course_id,
            func.count().label("grades"),
            func.avg(_percent_of_max()).label("average_grade"),
            func.sum(case((Assignment.due_at < cutoff, 1), else_=0)).label("graded_due"),
        )
        .join(Assignment, Assignment.id == Grade.assignment_id)
        .where(
            Assignment.due_at >= when.start,
            Assignment.due_at < when.end,
            *only(Grade.user_id, Assignment.course_id),
        )
        .group_by(Grade.user_id, Assignment.course_id)
        .subquery()
    )
    attended = Attendance.status.in_(("present", "late"))
    attendance = (
        select(
            Attendance.user_id,
            Attendance.course_id,
            func.count().label("days"),
            func.sum(case((attended, 1), else_=0)).label("attended"),
            func.sum(case((Attendance.status == "absent", 1), else_=0)).label("absences"),
        )
        .where(
            Attendance.day >= when.start_date,
            Attendance.day <= when.end_date,
            *only(Attendance.user_id, Attendance.course_id),
        )
        .group_by(Attendance.user_id, Attendance.course_id)
        .subquery()
    )
    views = (
        select(
            LessonView.user_id,
            LessonView.course_id,
            func.count().label("views"),
            (func.sum(LessonView.seconds_spent) / 60.0).label("minutes"),
        )
        .where(
            LessonView.viewed_at >= when.start,
            LessonView.viewed_at < when.end,
            *only(LessonView.user_id, LessonView.course_id),
        )
        .group_by(LessonView.user_id, LessonView.course_id)
        .subquery()
    )
    enrolled = [Enrollment.enrolled_at < when.end, *only(Enrollment.user_id, Enrollment.course_id)]
    rows = (
        select(
            Enrollment.user_id.label("student_id"),
            User.name.label("student_name"),
            Enrollment.course_id,
            Course.code,
            Enrollment.status,
            Enrollment.progress_percent.label("progress"),
            _zero(grades.c.grades).label("grades"),
            grades.c.average_grade,
            _zero(due.c.due).label("assignments_due"),
            (_zero(due.c.due) - _zero(grades.c.graded_due)).label("missed_assignments"),
            _zero(attendance.c.days).label("attendance_days"),
            _rate(attendance.c.attended, attendance.c.days).label("attendance_rate"),
            _zero(attendance.c.absences).label("absences"),
            _zero(views.c.views).label("lesson_views"),
            _zero(views.c.minutes).label("minutes_spent"),
        )
        .join(User, User.id == Enrollment.user_id)
        .join(Course, Course.id == Enrollment.course_id)
        .outerjoin(due, due.c.course_id == Enrollment.course_id)
        .outerjoin(
            grades, and_(grades.c.user_id == Enrollment.user_id, grades.c.course_id == Enrollment.course_id)
        )
        .outerjoin(
            attendance,
            and_(attendance.c.user_id == Enrollment.user_id, attendance.c.course_id == Enrollment.course_id),
        )
        .outerjoin(
            views, and_(views.c.user_id == Enrollment.user_id, views.c.course_id == Enrollment.course_id)
        )
        .where(*enrolled)
        .order_by(Enrollment.user_id, Enrollment.course_id)
    )
    grouping = parameters["group_by"]
    # Aggregated per due time and per day first: the period's text is then computed for a few
    # dozen groups, not for every grade and attendance row.
    by_due = (
        select(
            Assignment.due_at.label("at"),
            func.count().label("grades"),
            func.sum(_percent_of_max()).label("grade_sum"),
        )
        .join(Grade, Grade.assignment_id == Assignment.id)
        .where(
            Assignment.due_at >= when.start,
            Assignment.due_at < when.end,
            *only(Grade.user_id, Assignment.course_id),
        )
        .group_by(Assignment.due_at)
        .subquery()
    )
    by_day = (
        select(
            Attendance.day,
            func.count().label("days"),
            func.sum(case((attended, 1), else_=0)).label("attended"),
        )
        .where(
            Attendance.day >= when.start_date,
            Attendance.day <= when.end_date,
            *only(Attendance.user_id, Attendance.course_id),
        )
        .group_by(Attendance.day)
        .subquery()
    )
    both = union_all(
        select(
            period(by_due.c.at, grouping, dialect).label("p"),
            by_due.c.grades,
            by_due.c.grade_sum,
            literal(0).label("days"),
            literal(0).label("attended"),
        ),
        select(
            period(by_day.c.day, grouping, dialect, is_date=True).label("p"),
            literal(0).label("grades"),
            literal(0.0).label("grade_sum"),
            by_day.c.days,
            by_day.c.attended,
        ),
    ).subquery()
    trend = (
        select(
            both.c.p.label("period"),
            func.sum(both.c.grades).label("grades"),
            (func.sum(both.c.grade_sum) / func.nullif(func.sum(both.c.grades), 0)).label("average_grade"),
            func.sum(both.c.days).label("attendance_days"),
            _rate(func.sum(both.c.attended), func.sum(both.c.days)).label("attendance_rate"),
        )
        .group_by(both.c.p)
        .order_by(both.c.p)
    )
    table = rows.subquery()
    summary = select(
        func.count(distinct(table.c.student_id)).label("students"),
        func.count().label("enrolments"),
        _rate(func.sum(case((table.c.status == "completed", 1), else_=0)), func.count()).label(
            "completion_rate"
        ),
        (func.sum(table.c.average_grade * table.c.grades) / func.nullif(func.sum(table.c.grades), 0)).label(
            "average_grade"
        ),
        _zero(func.sum(table.c.missed_assignments)).label("missed_assignments"),
        (
            func.sum(table.c.attendance_rate * table.c.attendance_days)
            / func.nullif(func.sum(table.c.attendance_days), 0)
        ).label("attendance_rate"),
    )
    estimate = select(func.count()).select_from(Enrollment).where(*enrolled)
    return ReportSpec(
        "student-progress",
        "Student progress",
        (
            Column("students", "Students"),
            Column("enrolments", "Enrolments"),
            Column("completion_rate", "Completion %", "pct"),
            Column("average_grade", "Average grade %", "pct"),
            Column("missed_assignments", "Missed assignments"),
            Column("attendance_rate", "Attendance %", "pct"),
        ),
        summary,
        (
            Section("students", "Students by course", STUDENT_COLUMNS, rows, estimate=estimate),
            Section(
                "trend",
                "Trend",
                (
                    Column("period", "Period", "text"),
                    Column("grades", "Grades"),
                    Column("average_grade", "Avg grade %", "pct"),
                    Column("attendance_days", "Attendance days"),
                    Column("attendance_rate", "Attendance %", "pct"),
                ),
                trend,
                chart=("period", "attendance_rate"),
            ),
        ),
    )


# Engagement ---------------------------------------------------------------------------------------


def engagement_metrics(parameters: dict[str, Any], when: Period, dialect: str) -> ReportSpec:
    course_ids = parameters.get("course_ids")
    in_period = [LessonView.viewed_at >= when.start, LessonView.viewed_at < when.end]
    if course_ids:
        in_period.append(LessonView.course_id.in_(course_ids))
    p = period(LessonView.viewed_at, parameters["group_by"], dialect)
    activity = (
        select(
            p.label("period"),
            func.count(distinct(LessonView.user_id)).label("active_users"),
            func.count().label("lesson_views"),
            (func.sum(LessonView.seconds_spent) / 60.0).label("minutes_spent"),
            func.sum(case((LessonView.completed, 1), else_=0)).label("completions"),
        )
        .where(*in_period)
        .group_by(p)
        .order_by(p)
    )
    per_lesson = (
        select(
            LessonView.lesson_id,
            func.count().label("views"),
            func.count(distinct(LessonView.user_id)).label("viewers"),
            func.sum(case((LessonView.completed, 1), else_=0)).label("completions"),
            (func.sum(LessonView.seconds_spent) / 60.0).label("minutes"),
        )
        .where(*in_period)
        .group_by(LessonView.lesson_id)
        .subquery()
    )
    first = (
        select(Lesson.course_id, per_lesson.c.viewers)
        .join(per_lesson, per_lesson.c.lesson_id == Lesson.id)
        .where(Lesson.position == 1)
        .subquery()
    )
    drop_off = (
        select(
            Lesson.course_id,
            Course.code,
            Lesson.position,
            Lesson.title,
            per_lesson.c.viewers,
            per_lesson.c.views,
            _rate(per_lesson.c.completions, per_lesson.c.views).label("completion_rate"),
            _rate(per_lesson.c.viewers, first.c.viewers).label("reach"),
            per_lesson.c.minutes.label("minutes_spent"),
        )
        .join(per_lesson, per_lesson.c.lesson_id == Lesson.id)
        .join(Course, Course.id == Lesson.course_id)
        .outerjoin(first, first.c.course_id == Lesson.course_id)
        .order_by(Lesson.course_id, Lesson.position)
    )
    summary = select(
        func.count(distinct(LessonView.user_id)).label("active_users"),
        func.count().label("lesson_views"),
        _zero(func.sum(LessonView.seconds_spent) / 60.0).label("minutes_spent"),
        _rate(func.sum(case((LessonView.completed, 1), else_=0)), func.count()).label("completion_rate"),
        (func.avg(LessonView.seconds_spent) / 60.0).label("minutes_per_view"),
    ).where(*in_period)
    return ReportSpec(
        "engagement-metrics",
        "Engagement metrics",
        (
            Column("active_users", "Active users"),
            Column("lesson_views", "Lesson views"),
            Column("minutes_spent", "Minutes spent", "float"),
            Column("completion_rate", "Lessons completed %", "pct"),
            Column("minutes_per_view", "Minutes per view", "float"),
        ),
        summary,
        (
            Section(
                "activity",
                "Activity",
                (
                    Column("period", "Period", "text"),
                    Column("active_users", "Active users"),
                    Column("lesson_views", "Lesson views"),
                    Column("minutes_spent", "Minutes spent", "float"),
                    Column("completions", "Completions"),
                ),
                activity,
                chart=("period", "active_users"),
            ),
            Section(
                "drop_off",
                "Drop-off by lesson",
                (
                    Column("course_id", "Course id"),
                    Column("code", "Course", "text"),
                    Column("position", "Lesson"),
                    Column("title", "Title", "text"),
                    Column("viewers", "Viewers"),
                    Column("views", "Views"),
                    Column("completion_rate", "Completed %", "pct"),
                    Column("reach", "Reach % of lesson 1", "pct"),
                    Column("minutes_spent", "Minutes spent", "float"),
                ),
                drop_off,
            ),
        ),
    )


# Money --------------------------------------------------------------------------------------------


def _money(kind: str, value: Any) -> ColumnElement[Any]:
    return _zero(func.sum(case((Payment.kind == kind, value), else_=0))) / 100.0


def _count(kind: str) -> ColumnElement[int]:
    return func.sum(case((Payment.kind == kind, 1), else_=0))


MONEY_COLUMNS = (
    Column("payments", "Payments"),
    Column("revenue", "Revenue", "money"),
    Column("refunds", "Refunds"),
    Column("refunded", "Refunded", "money"),
    Column("net", "Net", "money"),
)


def financial_summary(parameters: dict[str, Any], when: Period, dialect: str) -> ReportSpec:
    course_ids = parameters.get("course_ids")
    in_period = [Payment.paid_at >= when.start, Payment.paid_at < when.end]
    if course_ids:
        in_period.append(Payment.course_id.in_(course_ids))
    amounts = (
        _count("payment").label("payments"),
        _money("payment", Payment.amount_cents).label("revenue"),
        _count("refund").label("refunds"),
        _money("refund", Payment.amount_cents).label("refunded"),
        (_money("payment", Payment.amount_cents) - _money("refund", Payment.amount_cents)).label("net"),
    )
    p = period(Payment.paid_at, parameters["group_by"], dialect)
    by_period = select(p.label("period"), *amounts).where(*in_period).group_by(p).order_by(p)
    by_course = (
        select(
            Payment.course_id,
            Course.code,
            Course.title,
            *amounts,
            _rate(_count("refund"), _count("payment")).label("refund_rate"),
        )
        .join(Course, Course.id == Payment.course_id)
        .where(*in_period)
        .group_by(Payment.course_id, Course.code, Course.title)
        .order_by(Payment.course_id)
    )
    summary = select(
        *amounts, func.count(distinct(case((Payment.kind == "payment", Payment.user_id)))).label("payers")
    ).where(*in_period)
    return ReportSpec(
        "financial-summary",
        "Financial summary",
        (*MONEY_COLUMNS, Column("payers", "Paying students")),
        summary,
        (
            Section(
                "by_period",
                "By period",
                (Column("period", "Period", "text"), *MONEY_COLUMNS),
                by_period,
                chart=("period", "net"),
            ),
            Section(
                "by_course",
                "By course",
                (
                    Column("course_id", "Course id"),
                    Column("code", "Code", "text"),
                    Column("title", "Title", "text"),
                    *MONEY_COLUMNS,
                    Column("refund_rate", "Refunds %", "pct"),
                ),
                by_course,
            ),
        ),
    )


# Per instructor -----------------------------------------------------------------------------------


def instructor_analytics(parameters: dict[str, Any], when: Period, dialect: str) -> ReportSpec:
    instructor_id = parameters.get("instructor_id")
    where = _course_filter(None, instructor_id)
    courses = _course_rows(when, where).subquery()
    active = (
        select(Course.instructor_id, func.count(distinct(LessonView.user_id)).label("active_students"))
        .join(Course, Course.id == LessonView.course_id)
        .where(LessonView.viewed_at >= when.start, LessonView.viewed_at < when.end, *where)
        .group_by(Course.instructor_id)
        .subquery()
    )
    per_instructor = (
        select(
            courses.c.instructor_id,
            func.count().label("courses"),
            func.sum(courses.c.enrolments).label("enrolments"),
            func.sum(courses.c.completed).label("completed"),
            func.sum(courses.c.grades).label("grades"),
            func.sum(courses.c.average_grade * courses.c.grades).label("grade_points"),
            func.sum(courses.c.lesson_views).label("lesson_views"),
            func.sum(courses.c.minutes_spent).label("minutes_spent"),
        )
        .where(courses.c.instructor_id.is_not(None))
        .group_by(courses.c.instructor_id)
        .subquery()
    )
    instructors = (
        select(
            User.id.label("instructor_id"),
            User.name,
            per_instructor.c.courses,
            per_instructor.c.enrolments,
            _rate(per_instructor.c.completed, per_instructor.c.enrolments).label("completion_rate"),
            per_instructor.c.grades,
            (per_instructor.c.grade_points / func.nullif(per_instructor.c.grades, 0)).label("average_grade"),
            per_instructor.c.lesson_views,
            _zero(active.c.active_students).label("active_students"),
            per_instructor.c.minutes_spent,
        )
        .join(per_instructor, per_instructor.c.instructor_id == User.id)
        .outerjoin(active, active.c.instructor_id == User.id)
        .order_by(User.id)
    )
    rows = instructors.subquery()
    summary = select(
        func.count().label("instructors"),
        _zero(func.sum(rows.c.courses)).label("courses"),
        _zero(func.sum(rows.c.enrolments)).label("enrolments"),
        (func.sum(rows.c.average_grade * rows.c.grades) / func.nullif(func.sum(rows.c.grades), 0)).label(
            "average_grade"
        ),
        _zero(func.sum(rows.c.lesson_views)).label("lesson_views"),
    )
    return ReportSpec(
        "instructor-analytics",
        "Instructor analytics",
        (
            Column("instructors", "Instructors"),
            Column("courses", "Courses"),
            Column("enrolments", "Enrolments"),
            Column("average_grade", "Average grade %", "pct"),
            Column("lesson_views", "Lesson views"),
        ),
        summary,
        (
            Section(
                "instructors",
                "Instructors",
                (
                    Column("instructor_id", "Instructor id"),
                    Column("name", "Name", "text"),
                    Column("courses", "Courses"),
                    Column("enrolments", "Enrolments"),
                    Column("completion_rate", "Completion %", "pct"),
                    Column("grades", "Grades"),
                    Column("average_grade", "Avg grade %", "pct"),
                    Column("lesson_views", "Lesson views"),
                    Column("active_students", "Active students"),
                    Column("minutes_spent", "Minutes spent", "float"),
                ),
                instructors,
                chart=("name", "average_grade"),
            ),
            Section("courses", "Courses", COURSE_COLUMNS, _course_rows(when, where)),
        ),
    )
