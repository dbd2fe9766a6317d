"""The benchmark's event handler and plain actor, behind edujobs' broker set-up:
``dramatiq bench.events_actors``.

``bench.on_attendance_marked`` handles ``attendance.marked`` events (its own queue, bound on
``edujobs.events``); ``bench.mark_attendance`` takes the same fields as a plain message on the
``bench`` queue. Both do the same trivial work: one Redis INCR.
"""

from __future__ import annotations

from typing import Any

import dramatiq

import brokers
from actors.base import handler
from bench.noop import QUEUE, increment
from contracts.events import AttendanceMarked, Event

HANDLER = "bench.on_attendance_marked"
ACTOR = "bench.mark_attendance"

brokers.setup()


@handler(HANDLER, events=["attendance.marked"], time_limit=60_000, max_backoff=1_000, max_retries=0)
def on_attendance_marked(event: Event[AttendanceMarked]) -> None:
    increment()


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
def mark_attendance(**_fields: Any) -> None:
    increment()
