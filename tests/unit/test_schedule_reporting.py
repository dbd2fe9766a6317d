"""Each fire is reported: a Sentry Crons check-in (to the fake Sentry, through the real sentry-sdk)
for recurring schedules, and Prometheus counters and gauges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sentry_sdk
from apscheduler.job import Job
from apscheduler.triggers.date import DateTrigger
from prometheus_client import REGISTRY

from middleware.sentry import init_sentry
from schedules.cron import CronTrigger
from schedules.scheduler import Fire, make_job
from schedules.service import report
from tests.fakes.sentry import FakeSentry


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    server = FakeSentry().start()
    assert init_sentry(dsn=server.dsn, environment="test", release="edujobs@test")
    yield server
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)
    server.stop()


def job(name: str, trigger: CronTrigger | DateTrigger, misfire: str = "skip") -> Job:
    return make_job(
        job_id=f"crontab:{name}",
        name=name,
        actor="notifications.send_weekly_digests",
        payload={},
        priority=None,
        trigger=trigger,
        misfire=misfire,
        grace_seconds=1800,
        next_run_time=None,
        timezone="Europe/Paris",
    )


def test_an_enqueued_fire_sends_no_ok_and_a_failed_one_an_error_with_its_monitor(sentry: FakeSentry) -> None:
    # Given a weekly schedule whose fire was enqueued (the worker that runs it checks it in)
    weekly = job("weekly-digests", CronTrigger("0 3 * * sun", "Europe/Paris"))
    when = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    report(Fire("weekly-digests", when, "enqueued", message_id="m-1"), weekly)
    # When the next fire's sending fails
    report(Fire("weekly-digests", when, "failed", note="RabbitMQ is down"), weekly)
    sentry_sdk.flush(timeout=5)
    # Then Sentry got one check-in: the error, describing the monitor (crontab, zone, margin)
    [error] = sentry.check_ins()
    assert error["monitor_slug"] == "edujobs-weekly-digests" and error["status"] == "error"
    assert error["monitor_config"]["schedule"] == {"type": "crontab", "value": "0 3 * * sun"}
    assert error["monitor_config"]["timezone"] == "Europe/Paris"
    assert error["monitor_config"]["checkin_margin"] == 30


def test_a_one_off_fire_has_no_monitor_but_is_counted(sentry: FakeSentry) -> None:
    once = job("winter", DateTrigger(run_date=datetime(2030, 1, 1, tzinfo=UTC)))
    before = REGISTRY.get_sample_value(
        "edujobs_schedule_fires_total", {"schedule": "winter", "outcome": "enqueued"}
    )
    report(Fire("winter", datetime(2030, 1, 1, tzinfo=UTC), "enqueued", message_id="m-2"), once)
    sentry_sdk.flush(timeout=5)
    assert sentry.check_ins() == []
    after = REGISTRY.get_sample_value(
        "edujobs_schedule_fires_total", {"schedule": "winter", "outcome": "enqueued"}
    )
    assert after == (before or 0) + 1
    stamp = REGISTRY.get_sample_value(
        "edujobs_schedule_last_enqueued_timestamp_seconds", {"schedule": "winter"}
    )
    assert stamp is not None and abs(stamp - datetime.now(UTC).timestamp()) < 60
