"""What monitoring sees of the fires a scheduler skips, through ``Scheduler.tick`` with a controllable
clock: the Prometheus counter by outcome and the Sentry Crons check-ins (the real sentry-sdk, a fake
Sentry)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sentry_sdk
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from schedules.service import report
from tests.fakes.sentry import FakeSentry
from tests.integration.test_scheduler import SKIPPY, Outbox, at, engine, scheduler  # noqa: F401  (fixture)
from tests.unit.test_schedule_reporting import sentry  # noqa: F401  (fixture)

UTC_ZONE = ZoneInfo("UTC")


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "edujobs_schedule_fires_total", {"schedule": "hourly-skip", "outcome": outcome}
    )
    return value or 0.0


def test_fires_skipped_after_downtime_are_counted_and_alert_sentry_once(
    engine: Engine,  # noqa: F811
    sentry: FakeSentry,  # noqa: F811
) -> None:
    # Given an hourly schedule that drops fires more than 5 minutes late
    skipped_before, enqueued_before = counted("skipped"), counted("enqueued")
    s = scheduler(engine, Outbox(), SKIPPY, on_fire=report)
    s.start(now=at("2026-11-01T00:30", UTC_ZONE))
    # When the scheduler comes back at 05:02 after four hours down
    s.tick(at("2026-11-01T05:02", UTC_ZONE))
    sentry_sdk.flush(timeout=5)
    # Then the four late fires are counted as skipped and the 05:00 one as enqueued
    assert counted("skipped") == skipped_before + 4
    assert counted("enqueued") == enqueued_before + 1
    # And Sentry gets one error check-in for the skipped fires, and none for the enqueued one (the
    # worker that runs it checks it in)
    assert [(c["monitor_slug"], c["status"]) for c in sentry.check_ins()] == [
        ("edujobs-hourly-skip", "error"),
    ]


def test_a_fire_claimed_by_another_leader_is_counted_as_a_duplicate_without_an_alert(
    engine: Engine,  # noqa: F811
    sentry: FakeSentry,  # noqa: F811
) -> None:
    # Given two schedulers that both believe they lead (a paused process waking up)
    duplicates_before = counted("duplicate")
    outbox = Outbox()
    fire_at = at("2026-11-01T01:00:01", UTC_ZONE)

    def send_while_the_other_ticks(*message: Any) -> str:
        b.tick(fire_at + timedelta(seconds=1))  # b finds the fire due: a has not moved the job on yet
        return outbox(*message)

    a = scheduler(engine, send_while_the_other_ticks, SKIPPY, holder="a", on_fire=report)
    b = scheduler(engine, outbox, SKIPPY, holder="b", on_fire=report)
    a.start(now=at("2026-11-01T00:30", UTC_ZONE))
    b.start(now=at("2026-11-01T00:30", UTC_ZONE))
    b.lead = lambda now: True  # type: ignore[method-assign]
    # When both tick at 01:00, b while a is sending
    a.tick(fire_at)
    sentry_sdk.flush(timeout=5)
    # Then one message went out, the other's attempt is counted as a duplicate, and the scheduler
    # sends Sentry nothing: neither a duplicate nor an enqueue is an outcome of the job
    assert len(outbox.sent) == 1
    assert counted("duplicate") == duplicates_before + 1
    assert sentry.check_ins() == []
