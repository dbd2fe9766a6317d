"""Who gets which scheduled analytics report, for which period (``reports.send_scheduled_reports``).

- ``course-performance``: every admin, last calendar month, all courses;
- ``instructor-analytics``: every instructor with a course, last week (Monday to Sunday), their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from store.models import Course, User


def last_month(today: date) -> tuple[date, date]:
    end = today.replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


def last_week(today: date) -> tuple[date, date]:
    monday = today - timedelta(days=today.weekday() + 7)
    return monday, monday + timedelta(days=6)


def scheduled_requests(
    engine: Engine, report_type: str, today: date | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(user id, parameters) of each scheduled report of ``report_type`` due today."""
    today = today or datetime.now(UTC).date()
    with engine.connect() as connection:
        if report_type == "course-performance":
            start, end = last_month(today)
            admins = connection.scalars(select(User.id).where(User.role == "admin").order_by(User.id)).all()
            for admin_id in admins:
                yield (
                    admin_id,
                    {"start_date": start.isoformat(), "end_date": end.isoformat(), "group_by": "week"},
                )
        elif report_type == "instructor-analytics":
            start, end = last_week(today)
            instructors = connection.scalars(
                select(User.id)
                .where(
                    User.role == "instructor",
                    select(Course.id).where(Course.instructor_id == User.id).exists(),
                )
                .order_by(User.id)
            ).all()
            for instructor_id in instructors:
                yield (
                    instructor_id,
                    {
                        "start_date": start.isoformat(),
                        "end_date": end.isoformat(),
                        "group_by": "day",
                        "instructor_id": instructor_id,
                    },
                )
        else:
            raise ValueError(f"no schedule for report type {report_type!r}")
