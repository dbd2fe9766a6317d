"""The benchmark's event handlers and plain actors, behind edujobs' broker set-up:
``dramatiq bench.events_actors``.

``bench.on_attendance_marked`` handles ``attendance.marked`` events (its own queue, bound on
``edujobs.events``); ``bench.mark_attendance`` takes the same fields as a plain message on the
``bench`` queue. Both do the same trivial work: one Redis INCR.

``--work db`` (``bench.on_attendance_marked_db`` and ``bench.apply_attendance_mark``): both do the
real ``attendance.marked`` handler's work (``actors.academics.service.apply_attendance_mark``: the
processed-event record, the roll-up upsert and the student's intervention check, in one PostgreSQL
transaction), then the INCR.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

import brokers
from actors.academics import service
from actors.base import handler
from bench.noop import QUEUE, increment
from contracts.events import AttendanceMarked, Event
from store.db import get_engine

HANDLER = "bench.on_attendance_marked"
ACTOR = "bench.mark_attendance"
DB_HANDLER = "bench.on_attendance_marked_db"
DB_ACTOR = "bench.apply_attendance_mark"

brokers.setup()


def _nobody(user_id: int, template: str, context: dict[str, Any], key: str) -> None:
    """The benchmark tells nobody (the marks it sends open no intervention)."""


def _apply(event_id: str, mark: AttendanceMarked) -> None:
    service.apply_attendance_mark(
        get_engine(),
        _nobody,
        event_id,
        user_id=mark.user_id,
        course_id=mark.course_id,
        day=mark.day,
        status=mark.status,
        previous_status=mark.previous_status,
    )
    increment()


@handler(HANDLER, events=["attendance.marked"], time_limit=60_000, max_backoff=1_000, max_retries=0)
def on_attendance_marked(event: Event[AttendanceMarked]) -> None:
    increment()


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
def mark_attendance(**_fields: Any) -> None:
    increment()


@handler(DB_HANDLER, events=["attendance.marked"], time_limit=60_000, max_backoff=1_000, max_retries=0)
def on_attendance_marked_db(event: Event[AttendanceMarked]) -> None:
    _apply(event.id, event.payload)


@dramatiq.actor(queue_name=QUEUE, actor_name=DB_ACTOR, max_retries=0)
def apply_attendance_mark(**fields: Any) -> None:
    message = CurrentMessage.get_current_message()
    assert message is not None
    mark = AttendanceMarked.model_validate(fields)
    _apply(message.message_id, mark)
