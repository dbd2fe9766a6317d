"""The scheduler with a controllable clock, on PostgreSQL: fires, misfires, leadership, run-time schedules."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schedules.crontab import Schedule
from schedules.scheduler import (
    ScheduleError,
    Scheduler,
    Send,
    add_schedule,
    fire_key,
    list_schedules,
    remove_schedule,
)
from store.db import make_engine
from store.migrate import upgrade
from store.models_schedules import ScheduleFire

PARIS = ZoneInfo("Europe/Paris")
DIGESTS = Schedule(
    "weekly-digests", "notifications.send_weekly_digests", "0 3 * * sun", timezone="Europe/Paris"
)
SKIPPY = Schedule(
    "hourly-skip",
    "notifications.send_weekly_digests",
    "0 * * * *",
    timezone="UTC",
    misfire="skip",
    grace_seconds=300,
)


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    upgrade(migrated_database_url)
    engine = make_engine(migrated_database_url)
    yield engine
    engine.dispose()


class Outbox:
    """Stands in for RabbitMQ: what the scheduler sent, by idempotency key."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str | None, str]] = []
        self.failing = False

    def __call__(
        self, actor: str, payload: dict[str, Any], priority: str | None, key: str, schedule: str
    ) -> str:
        assert key.startswith(f"schedule:{schedule}:")
        if self.failing:
            raise ConnectionError("RabbitMQ is down")
        self.sent.append((actor, payload, priority, key))
        return f"m-{len(self.sent)}"


def scheduler(
    engine: Engine, send: Send, *schedules: Schedule, holder: str = "a", **options: Any
) -> Scheduler:
    """A scheduler of ``schedules`` with a 10 s lease, sending through ``send``."""
    return Scheduler(
        engine=engine,
        send=send,
        crontab=schedules,
        default_timezone="UTC",
        holder=holder,
        **{"lease_seconds": 10, **options},
    )


def at(text: str, tz: ZoneInfo = PARIS) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def fires(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.scalars(select(ScheduleFire).order_by(ScheduleFire.fire_time, ScheduleFire.schedule))
        return [(f.schedule, f.fire_time.astimezone(UTC).isoformat(), f.status) for f in rows]


def test_a_weekly_schedule_fires_once_per_sunday_across_the_dst_change(engine: Engine) -> None:
    outbox = Outbox()
    s = scheduler(engine, outbox, DIGESTS)
    s.start(now=at("2026-03-18T12:00"))
    # Ticking every half hour through four weeks (the clocks go forward on 29 March)
    now = at("2026-03-18T12:00")
    while now < at("2026-04-12T12:00"):
        s.tick(now)
        now += timedelta(minutes=30)
    assert [key for *_, key in outbox.sent] == [
        fire_key("weekly-digests", at("2026-03-22T03:00")),
        fire_key("weekly-digests", at("2026-03-29T03:00")),
        fire_key("weekly-digests", at("2026-04-05T03:00")),
        fire_key("weekly-digests", at("2026-04-12T03:00")),
    ]
    assert (
        fire_key("weekly-digests", at("2026-03-29T03:00")) == "schedule:weekly-digests:2026-03-29T01:00:00Z"
    )
    assert all(status == "enqueued" for *_, status in fires(engine))


def test_after_downtime_catch_up_runs_once_and_skip_drops_the_late_fires(engine: Engine) -> None:
    outbox = Outbox()
    s = scheduler(engine, outbox, DIGESTS, SKIPPY)
    s.start(now=at("2026-11-01T00:30", ZoneInfo("UTC")))
    s.tick(at("2026-11-01T01:00:01", ZoneInfo("UTC")))
    assert [key for *_, key in outbox.sent] == [
        fire_key("hourly-skip", at("2026-11-01T01:00", ZoneInfo("UTC")))
    ]
    # When the scheduler comes back after two weeks down
    later = at("2026-11-15T10:02", ZoneInfo("UTC"))
    restarted = scheduler(engine, outbox, DIGESTS, SKIPPY, holder="b")
    restarted.start(now=later)
    result = restarted.tick(later + timedelta(seconds=20))
    # Then the weekly digest (catch_up) runs once, for its latest missed Sunday, the two others coalesced;
    # the hourly job (skip, 5 min grace) drops every late fire except the one of 10:00, still in grace
    enqueued = sorted((f.schedule, f.fire_time.isoformat()) for f in result if f.status == "enqueued")
    assert enqueued == [
        ("hourly-skip", "2026-11-15T10:00:00+00:00"),
        ("weekly-digests", "2026-11-15T03:00:00+01:00"),
    ]
    skipped = [f for f in result if f.status == "skipped"]
    assert {f.schedule for f in skipped} == {"hourly-skip", "weekly-digests"}
    assert len([f for f in skipped if f.schedule == "hourly-skip"]) == 14 * 24 - 1 + 9
    coalesced = [f for f in skipped if f.schedule == "weekly-digests"]
    assert [f.fire_time for f in coalesced] == [at("2026-11-01T03:00"), at("2026-11-08T03:00")]
    assert all("coalesced into the run for 2026-11-15T03:00:00+01:00" in (f.note or "") for f in coalesced)
    assert "over the 300 s grace" in next(f.note or "" for f in skipped if f.schedule == "hourly-skip")
    # And every fire time is accounted for in the record
    assert len([r for r in fires(engine) if r[0] == "hourly-skip"]) == 1 + 14 * 24 - 1 + 9 + 1


def test_two_schedulers_send_each_fire_once_and_a_standby_takes_over_a_dead_leader(engine: Engine) -> None:
    outbox = Outbox()
    a, b = scheduler(engine, outbox, SKIPPY, holder="a"), scheduler(engine, outbox, SKIPPY, holder="b")
    start = at("2026-11-01T00:30", ZoneInfo("UTC"))
    a.start(now=start)
    b.start(now=start)
    now = start
    # Both tick every 30 s for three hours; only the leader fires
    for _ in range(6 * 60):
        a.tick(now)
        b.tick(now)
        now += timedelta(seconds=30)
    assert a.leading and not b.leading
    assert len(outbox.sent) == 3 and len({key for *_, key in outbox.sent}) == 3
    # When the leader dies (it stops ticking, its lease runs out), the standby leads within the lease
    for _ in range(2 * 60 * 2):
        b.tick(now)
        now += timedelta(seconds=30)
    assert b.leading
    assert len(outbox.sent) == 5 and len({key for *_, key in outbox.sent}) == 5
    # And even two leaders at once (a paused process waking up) cannot both send a fire
    a.lead = lambda now: True
    a.leading = True
    fire_time = at("2026-11-01T06:00", ZoneInfo("UTC"))
    a.tick(fire_time + timedelta(seconds=5))
    b.tick(fire_time + timedelta(seconds=5))
    assert len(outbox.sent) == 6


def test_a_failed_send_is_retried_with_the_same_key_until_rabbitmq_is_back(engine: Engine) -> None:
    outbox = Outbox()
    s = scheduler(engine, outbox, SKIPPY)
    s.start(now=at("2026-11-01T00:30", ZoneInfo("UTC")))
    outbox.failing = True
    [failed] = s.tick(at("2026-11-01T01:00:01", ZoneInfo("UTC")))
    assert failed.status == "failed" and "RabbitMQ is down" in (failed.note or "")
    outbox.failing = False
    [retried] = s.tick(at("2026-11-01T01:00:05", ZoneInfo("UTC")))
    assert retried.status == "enqueued"
    assert outbox.sent[0][3] == fire_key("hourly-skip", at("2026-11-01T01:00", ZoneInfo("UTC")))
    assert s.tick(at("2026-11-01T01:00:09", ZoneInfo("UTC"))) == []


def test_a_run_time_one_off_survives_a_restart_and_fires_once(engine: Engine) -> None:
    now = at("2026-11-20T10:00")
    add_schedule(
        engine,
        "winter-announcement",
        "notifications.send_bulk_email",
        {"user_ids": [1, 2], "template": "announcement", "context": {"title": "Winter break"}},
        at=datetime(2026, 12, 1, 9, 0),
        timezone="Europe/Paris",
        priority="low",
        now=now,
    )
    outbox = Outbox()
    first = scheduler(engine, outbox, holder="a")
    first.start(now=now)
    first.tick(now)
    first.release()  # stopped
    listed = {row["name"]: row for row in list_schedules(engine, (), "UTC", now=now)}
    assert listed["winter-announcement"]["next"] == ["2026-12-01T09:00:00+01:00"]
    # A new scheduler process finds it in the job store and fires it at 09:00 Paris time, once
    second = scheduler(engine, outbox, holder="b")
    second.start(now=at("2026-12-01T08:59"))
    assert second.tick(at("2026-12-01T08:59:59")) == []
    [fired] = second.tick(at("2026-12-01T09:00:00"))
    assert fired.status == "enqueued" and outbox.sent[0][:3] == (
        "notifications.send_bulk_email",
        {"user_ids": [1, 2], "template": "announcement", "context": {"title": "Winter break"}},
        "low",
    )
    assert second.tick(at("2026-12-02T09:00:00")) == []
    assert "winter-announcement" not in {row["name"] for row in list_schedules(engine, (), "UTC")}


def test_a_recurring_run_time_schedule_is_listed_with_its_next_three_fires_and_last_run(
    engine: Engine,
) -> None:
    now = at("2026-11-20T10:00")
    add_schedule(
        engine,
        "monday-digest",
        "notifications.send_weekly_digests",
        {},
        cron="0 7 * * mon",
        timezone="Europe/Paris",
        now=now,
    )
    outbox = Outbox()
    s = scheduler(engine, outbox, DIGESTS)
    s.start(now=now)
    s.tick(at("2026-11-22T03:00:30"))
    rows = {row["name"]: row for row in list_schedules(engine, (DIGESTS,), "UTC", now=at("2026-11-22T04:00"))}
    assert rows["weekly-digests"]["next"] == [
        "2026-11-29T03:00:00+01:00",
        "2026-12-06T03:00:00+01:00",
        "2026-12-13T03:00:00+01:00",
    ]
    assert rows["weekly-digests"]["last_fire"]["status"] == "enqueued"
    assert rows["monday-digest"]["next"][0] == "2026-11-23T07:00:00+01:00"
    assert rows["monday-digest"]["kind"] == "run-time" and rows["monday-digest"]["last_fire"] is None
    remove_schedule(engine, "monday-digest")
    with pytest.raises(ScheduleError, match="no run-time schedule named 'monday-digest'"):
        remove_schedule(engine, "monday-digest")


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            Schedule("x", "notifications.nope", "0 2 * * *"),
            "unknown actor 'notifications.nope'; known actors: ",
        ),
        (Schedule("x", "notifications.send_weekly_digests", "0 2 * *"), "has 4 fields"),
        (
            Schedule("x", "notifications.send_weekly_digests", "0 2 * * *", timezone="Paris"),
            "unknown time zone",
        ),
        (Schedule("x", "notifications.send_weekly_digests", "0 2 * * *", payload={"as_of": "soon"}), "as_of"),
        (Schedule("Bad Name", "notifications.send_weekly_digests", "0 2 * * *"), "lowercase"),
    ],
)
def test_an_invalid_crontab_entry_stops_start_up_saying_why(
    engine: Engine, schedule: Schedule, message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        scheduler(engine, Outbox(), schedule).start()


def test_a_one_off_in_the_past_or_with_both_a_date_and_a_cron_is_refused(engine: Engine) -> None:
    with pytest.raises(ScheduleError, match="is in the past"):
        add_schedule(engine, "late", "notifications.send_weekly_digests", {}, at=datetime(2020, 1, 1, 9, 0))
    with pytest.raises(ScheduleError, match="not both"):
        add_schedule(
            engine, "both", "notifications.send_weekly_digests", {}, at=datetime(2030, 1, 1), cron="0 1 * * *"
        )


def tick_through(s: Scheduler, start: datetime, end: datetime, every: timedelta) -> None:
    # In UTC: a step added to a Paris time moves its wall clock, which skips the repeated hour.
    now = start.astimezone(UTC)
    while now <= end:
        s.tick(now)
        now += every


def sent_times(outbox: Outbox, name: str) -> list[str]:
    """The fire times (UTC) of what was sent for ``name``, read from the idempotency keys."""
    return [key.split(":", 2)[2] for *_, key in outbox.sent if key.startswith(f"schedule:{name}:")]


def test_across_the_autumn_dst_change_and_a_month_boundary_each_job_fires_as_its_wall_clock_says(
    engine: Engine,
) -> None:
    # Given daily 02:00, monthly 1st 00:00 and 04:00 and hourly jobs in Paris (clocks go back at
    # 03:00 on 25 October 2026: 02:00-03:00 happens twice)
    crontab = tuple(
        Schedule(name, "notifications.send_weekly_digests", cron, timezone="Europe/Paris")
        for name, cron in [
            ("daily", "0 2 * * *"),
            ("monthly-midnight", "0 0 1 * *"),
            ("monthly", "0 4 1 * *"),
            ("hourly", "0 * * * *"),
        ]
    )
    outbox = Outbox()
    s = scheduler(engine, outbox, *crontab)
    s.start(now=at("2026-10-24T12:00"))
    # When the scheduler ticks every 20 minutes from 24 October to 2 November
    tick_through(s, at("2026-10-24T12:00"), at("2026-11-02T06:00"), timedelta(minutes=20))
    # Then the daily job fires once a day at 02:00 local time, the first 02:00 on the day of the change
    assert sent_times(outbox, "daily") == [
        "2026-10-25T00:00:00Z",  # 02:00 summer time
        "2026-10-26T01:00:00Z",  # 02:00 winter time, from here on
        "2026-10-27T01:00:00Z",
        "2026-10-28T01:00:00Z",
        "2026-10-29T01:00:00Z",
        "2026-10-30T01:00:00Z",
        "2026-10-31T01:00:00Z",
        "2026-11-01T01:00:00Z",
        "2026-11-02T01:00:00Z",
    ]
    # And the monthly jobs once, on 1 November local time (31 October in UTC for midnight)
    assert sent_times(outbox, "monthly-midnight") == ["2026-10-31T23:00:00Z"]
    assert sent_times(outbox, "monthly") == ["2026-11-01T03:00:00Z"]
    # And the hourly job every real hour, the repeated 02:00 included: no gap, no double
    hourly = [datetime.fromisoformat(t) for t in sent_times(outbox, "hourly")]
    assert hourly[0] == at("2026-10-24T12:00") and hourly[-1] == at("2026-11-02T06:00")
    assert len(hourly) == 9 * 24 - 6 + 1 + 1  # the 25-hour day has one more
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hourly))
    assert all(status == "enqueued" for *_, status in fires(engine))


def test_a_monthly_midnight_job_fires_on_the_1st_of_march_and_of_april_across_the_spring_change(
    engine: Engine,
) -> None:
    # Given the monthly job APScheduler's own trigger moves from 1 March to 1 May in Paris
    monthly = Schedule("monthly", "notifications.send_weekly_digests", "0 0 1 * *", timezone="Europe/Paris")
    outbox = Outbox()
    s = scheduler(engine, outbox, monthly)
    s.start(now=at("2026-02-27T12:00"))
    # When the scheduler ticks every 6 hours through March (clocks go forward on 29 March)
    tick_through(s, at("2026-02-27T12:00"), at("2026-05-01T06:00"), timedelta(hours=6))
    # Then it fires on each 1st, at local midnight
    assert sent_times(outbox, "monthly") == [
        "2026-02-28T23:00:00Z",
        "2026-03-31T22:00:00Z",
        "2026-04-30T22:00:00Z",
    ]


def test_a_one_off_whose_send_failed_is_retried_and_then_removed(engine: Engine) -> None:
    # Given a one-off at 09:00 Paris and RabbitMQ down at that moment
    add_schedule(
        engine,
        "announcement",
        "notifications.send_weekly_digests",
        {},
        at=datetime(2026, 12, 1, 9, 0),
        timezone="Europe/Paris",
        now=at("2026-11-30T12:00"),
    )
    outbox = Outbox()
    s = scheduler(engine, outbox)
    s.start(now=at("2026-12-01T08:00"))
    outbox.failing = True
    [failed] = s.tick(at("2026-12-01T09:00:01"))
    assert failed.status == "failed"
    # When RabbitMQ is back
    outbox.failing = False
    [retried] = s.tick(at("2026-12-01T09:00:10"))
    # Then the one-off is sent after all, once, and then gone from the schedules
    assert retried.status == "enqueued" and len(outbox.sent) == 1
    assert s.tick(at("2026-12-01T09:05")) == []
    assert list_schedules(engine, (), "UTC", now=at("2026-12-01T09:05")) == []


def test_a_run_time_schedule_without_a_time_zone_takes_the_districts(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the district's time zone is Paris
    monkeypatch.setenv("EDUJOBS_SCHEDULE_TIMEZONE", "Europe/Paris")
    # When a one-off is added from Python at a wall time, without a time zone
    job = add_schedule(
        engine,
        "assembly",
        "notifications.send_weekly_digests",
        {},
        at=datetime(2026, 12, 1, 9, 0),
        now=at("2026-11-30T12:00"),
    )
    # Then it fires at 09:00 in Paris, as the CLI and the API would have it
    assert job.next_run_time == at("2026-12-01T09:00")
    [row] = list_schedules(engine, (), "UTC", now=at("2026-11-30T12:00"))
    assert (row["timezone"], row["next"]) == ("Europe/Paris", ["2026-12-01T09:00:00+01:00"])
