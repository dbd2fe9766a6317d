"""Event handlers of the academics domain: thin adapters from events to ``service``.

Each applies its event once per event id (``processed_events``, written in the transaction of the
effect), so an event published twice, or redelivered after a worker died, changes nothing more.
"""

from __future__ import annotations

from typing import Any

from actors.academics import service
from actors.base import handler, notify
from contracts.events import AttendanceMarked, Event, GradeUpdated
from store.db import get_engine


@handler(
    service.GRADE_HANDLER, events=["grade.updated"], time_limit=60_000, max_backoff=3_600_000, max_retries=8
)
def on_grade_updated(event: Event[GradeUpdated]) -> dict[str, Any]:
    """Recompute the student's course grade, record it, and tell them once per posting."""
    grade = event.payload
    return service.record_course_grade(
        get_engine(),
        notify,
        event.id,
        grade_id=grade.grade_id,
        user_id=grade.user_id,
        course_id=grade.course_id,
    )


@handler(
    service.ATTENDANCE_HANDLER,
    events=["attendance.marked"],
    time_limit=60_000,
    max_backoff=3_600_000,
    max_retries=8,
)
def on_attendance_marked(event: Event[AttendanceMarked]) -> dict[str, Any]:
    """Adjust the day's roll-up and apply the intervention rule to the student at once."""
    mark = event.payload
    return service.apply_attendance_mark(
        get_engine(),
        notify,
        event.id,
        user_id=mark.user_id,
        course_id=mark.course_id,
        day=mark.day,
        status=mark.status,
        previous_status=mark.previous_status,
    )
