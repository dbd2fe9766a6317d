"""Cron expressions on a time zone's wall clock: a whole year of fire times, across DST changes."""

from __future__ import annotations

import itertools
import pickle
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedules.cron import Cron, CronError, CronTrigger
from schedules.crontab import CRONTAB

ZONES = ["Europe/Paris", "America/New_York", "Australia/Sydney", "UTC"]


def fires(expression: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    trigger = CronTrigger(expression, tz)
    found: list[datetime] = []
    current = trigger.get_next_fire_time(None, start)
    while current < end:
        found.append(current)
        current = trigger.get_next_fire_time(current, current)
    return found


def year(tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    return datetime(2026, 1, 1, tzinfo=zone), datetime(2027, 1, 1, tzinfo=zone)


@pytest.mark.parametrize("tz", ZONES)
def test_a_daily_0200_job_fires_once_on_every_local_day_of_a_year_dst_changes_included(tz: str) -> None:
    found = fires("0 2 * * *", tz, *year(tz))
    days = [f.astimezone(ZoneInfo(tz)).date() for f in found]
    assert len(found) == 365 and len(set(days)) == 365
    # Strictly increasing, at least 23 hours apart (a day with a clock change is 23 or 25 hours long)
    assert all(b - a >= timedelta(hours=23) for a, b in itertools.pairwise(found))
    # At 02:00 local time, except where 02:00 does not exist: then at the end of the gap (03:00)
    local_hours = {(f.astimezone(ZoneInfo(tz)).hour, f.astimezone(ZoneInfo(tz)).minute) for f in found}
    assert local_hours <= {(2, 0), (3, 0)}


@pytest.mark.parametrize("tz", ZONES)
def test_the_sunday_jobs_fire_on_sundays_only_every_week_of_a_year(tz: str) -> None:
    for expression in ("0 3 * * sun", "0 9 * * 0", "0 9 * * 7", "@weekly"):
        found = fires(expression, tz, *year(tz))
        assert len(found) == 52  # 2026 has 52 Sundays (the first is 4 January)
        assert {f.astimezone(ZoneInfo(tz)).weekday() for f in found} == {6}, expression


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("hour", [0, 4, 5])
def test_the_monthly_jobs_fire_on_every_first_of_the_month(tz: str, hour: int) -> None:
    found = fires(f"0 {hour} 1 * *", tz, *year(tz))
    assert [f.astimezone(ZoneInfo(tz)).date() for f in found] == [date(2026, m, 1) for m in range(1, 13)]
    assert {f.astimezone(ZoneInfo(tz)).hour for f in found} == {hour}


def test_weekdays_fire_monday_to_friday() -> None:
    found = fires("0 7 * * mon-fri", "America/New_York", *year("America/New_York"))
    assert len(found) == 261
    assert {f.weekday() for f in found} == {0, 1, 2, 3, 4}


def test_times_inside_the_spring_gap_fire_once_at_its_end() -> None:
    # Europe/Paris skips 02:00-03:00 on 29 March 2026
    paris = ZoneInfo("Europe/Paris")
    found = fires(
        "*/20 2 * * *",
        "Europe/Paris",
        datetime(2026, 3, 28, tzinfo=paris),
        datetime(2026, 3, 30, tzinfo=paris),
    )
    assert [f.isoformat() for f in found] == [
        "2026-03-28T02:00:00+01:00",
        "2026-03-28T02:20:00+01:00",
        "2026-03-28T02:40:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]


def test_times_in_the_repeated_autumn_hour_fire_at_their_first_occurrence_only() -> None:
    # America/New_York shows 01:00-02:00 twice on 1 November 2026
    ny = ZoneInfo("America/New_York")
    found = fires(
        "30 1 * * *", "America/New_York", datetime(2026, 10, 31, tzinfo=ny), datetime(2026, 11, 3, tzinfo=ny)
    )
    assert [f.isoformat() for f in found] == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York"])
def test_an_hourly_job_fires_every_hour_of_the_25_hour_autumn_day_repeated_hour_twice(tz: str) -> None:
    # Given the day clocks go back (25 October 2026 in Paris, 1 November in New York)
    zone = ZoneInfo(tz)
    day = datetime(2026, 10, 25, tzinfo=zone) if tz == "Europe/Paris" else datetime(2026, 11, 1, tzinfo=zone)
    # When an hourly and a half-hourly job (hour field "*") run through it
    hourly = fires("0 * * * *", tz, day, day + timedelta(days=1))
    half_hourly = fires("*/30 * * * *", tz, day, day + timedelta(days=1))
    # Then they fire once per real hour (or half hour): 25 and 50 times, an hour (half hour) apart
    assert len(hourly) == 25 and len(half_hourly) == 50
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hourly))
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(half_hourly))
    # And the repeated wall hour appears twice, with each occurrence's own offset
    repeated = [
        f.isoformat() for f in hourly if f.astimezone(zone).hour == (2 if tz == "Europe/Paris" else 1)
    ]
    assert repeated == (
        ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
        if tz == "Europe/Paris"
        else ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"]
    )


def test_day_of_month_and_day_of_week_both_restricted_fire_on_either() -> None:
    found = fires(
        "0 0 13 * fri",
        "UTC",
        datetime(2026, 2, 1, tzinfo=ZoneInfo("UTC")),
        datetime(2026, 3, 1, tzinfo=ZoneInfo("UTC")),
    )
    assert [f.day for f in found] == [6, 13, 20, 27]  # the 13th is itself a Friday in February 2026


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "has 4 fields"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 2 * * funday", "day-of-week 'funday' is not a number or one of sun"),
        ("0 5-2 * * *", "goes backwards"),
        ("0 0 31 2 *", "never fires"),
        ("*/0 * * * *", "step must be at least 1"),
    ],
)
def test_a_bad_expression_says_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        CronTrigger(expression, "UTC").get_next_fire_time(None, datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")))


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        CronTrigger("0 2 * * *", "Mars/Olympus")


def test_a_trigger_pickles_as_its_expression_and_zone() -> None:
    trigger = pickle.loads(pickle.dumps(CronTrigger("0 7 * * mon-fri", "Europe/Paris")))
    assert (trigger.expression, trigger.timezone) == ("0 7 * * mon-fri", "Europe/Paris")
    assert isinstance(trigger.cron, Cron)


def test_every_crontab_entry_fires_as_documented_for_a_year_in_a_dst_zone() -> None:
    tz = "America/New_York"
    by_name = {entry.name: fires(entry.cron, tz, *year(tz)) for entry in CRONTAB}
    local = {name: [f.astimezone(ZoneInfo(tz)) for f in times] for name, times in by_name.items()}
    assert {len(local[n]) for n in ("daily-cleanup", "daily-backup", "daily-iep-review-reminders")} == {365}
    assert {f.weekday() for f in local["weekly-performance-trends"]} == {6}
    assert {(f.weekday(), f.hour) for f in local["weekly-inactive-users"]} == {(6, 9)}
    assert {(f.weekday(), f.hour) for f in local["weekly-digest"]} == {(6, 17)}
    assert len(local["weekly-digest"]) == 52
    assert {(f.day, f.hour) for f in local["monthly-compliance-audit"]} == {(1, 4)}
    assert len(local["monthly-health-summary"]) == 12
    assert {(f.weekday() < 5, f.hour) for f in local["weekday-grade-digest"]} == {(True, 7)}
