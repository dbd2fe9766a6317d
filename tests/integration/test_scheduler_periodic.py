"""Actors that declare ``periodic=cron(...)`` (periodiq's option) run on edujobs' scheduler beside the
crontab: once per fire time, in their zone, by their misfire policy, listed with their source; on
PostgreSQL, with a controllable clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from brokers.settings import Settings
from ops.cli import app
from schedules.crontab import Schedule
from schedules.periodic import periodic_schedules
from schedules.scheduler import ScheduleError, fire_key
from schedules.service import load_schedules
from tests.integration import periodic_testing
from tests.integration.periodic_testing import HOURLY_PING, SUNDAY_REPORT
from tests.integration.test_scheduler import DIGESTS, Outbox, at, engine, fires, scheduler  # noqa: F401

UTC_ZONE = ZoneInfo("UTC")
MODULE = "tests.integration.periodic_testing"


@pytest.fixture(autouse=True)
def contracts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with periodic_testing.contracts(monkeypatch):
        yield


def test_a_periodic_sunday_actor_fires_once_at_its_time_beside_the_crontab(engine: Engine) -> None:  # noqa: F811
    # Given the crontab's Sunday digests and an actor declaring periodic=cron("0 3 * * sun") in Paris
    periodic = periodic_schedules([MODULE])
    assert [s.name for s in periodic] == [HOURLY_PING, SUNDAY_REPORT]
    sunday_report = [s for s in periodic if s.name == SUNDAY_REPORT]
    outbox = Outbox()
    s = scheduler(engine, outbox, DIGESTS, *sunday_report)
    s.start(now=at("2026-11-28T12:00"))
    # When the scheduler ticks every 30 minutes from Saturday noon to Monday noon, twice each time
    now = at("2026-11-28T12:00")
    while now <= at("2026-11-30T12:00"):
        s.tick(now)
        s.tick(now)
        now += timedelta(minutes=30)
    # Then the actor was enqueued once, with no arguments, for Sunday 03:00 Paris time (02:00 UTC),
    # like the crontab's entry
    assert sorted(outbox.sent) == sorted(
        [
            (
                "notifications.send_weekly_digests",
                {},
                None,
                fire_key("weekly-digests", at("2026-11-29T03:00")),
            ),
            (SUNDAY_REPORT, {}, None, fire_key(SUNDAY_REPORT, at("2026-11-29T03:00"))),
        ]
    )
    assert fire_key(SUNDAY_REPORT, at("2026-11-29T03:00")) == f"schedule:{SUNDAY_REPORT}:2026-11-29T02:00:00Z"
    # And its fire is recorded like any other
    assert (SUNDAY_REPORT, "2026-11-29T02:00:00+00:00", "enqueued") in fires(engine)


def test_a_periodic_actor_keeps_its_misfire_policy(engine: Engine) -> None:  # noqa: F811
    # Given the hourly actor that drops fires more than 5 minutes late
    [hourly] = [s for s in periodic_schedules([MODULE]) if s.name == HOURLY_PING]
    outbox = Outbox()
    s = scheduler(engine, outbox, hourly)
    s.start(now=at("2026-11-01T00:30", UTC_ZONE))
    # When the scheduler comes back at 03:02 after being down since 00:30
    s.tick(at("2026-11-01T03:02", UTC_ZONE))
    # Then the 01:00 and 02:00 fires are skipped and the 03:00 one runs
    assert [key for *_, key in outbox.sent] == [fire_key(HOURLY_PING, at("2026-11-01T03:00", UTC_ZONE))]
    assert [status for name, _, status in fires(engine) if name == HOURLY_PING] == [
        "skipped",
        "skipped",
        "enqueued",
    ]


def test_a_name_in_both_the_crontab_and_on_an_actor_stops_start_up(engine: Engine) -> None:  # noqa: F811
    # Given a crontab entry named like the periodic actor
    clash = Schedule(SUNDAY_REPORT, "notifications.send_weekly_digests", "0 9 * * *")
    # When the scheduler starts with both, or the schedules are loaded from the settings
    s = scheduler(engine, Outbox(), clash, *periodic_schedules([MODULE]))
    with pytest.raises(ScheduleError) as raised:
        s.start(now=at("2026-11-28T12:00"))
    # Then it refuses, naming the schedule and where each comes from
    message = str(raised.value)
    assert f"the schedule '{SUNDAY_REPORT}' is declared twice" in message
    assert "in the crontab (actor notifications.send_weekly_digests)" in message
    assert "by periodic= on the actor" in message
    settings = Settings(
        scheduler_crontab="tests.integration.test_scheduler_periodic:CLASH", scheduler_actors=MODULE
    )
    with pytest.raises(ScheduleError, match="declared twice"):
        load_schedules(settings)


CLASH = (Schedule(SUNDAY_REPORT, "notifications.send_weekly_digests", "0 9 * * *"),)
DIGESTS_ONLY = (DIGESTS,)


def test_edujobs_schedules_lists_periodic_actors_beside_the_crontab(
    engine: Engine,  # noqa: F811
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the crontab of one entry and the periodic actors of the test module
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("EDUJOBS_SCHEDULER_CRONTAB", "tests.integration.test_scheduler_periodic:DIGESTS_ONLY")
    monkeypatch.setenv("EDUJOBS_SCHEDULER_ACTORS", MODULE)
    # When the operator lists the schedules
    result = CliRunner().invoke(app, ["schedules", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    # Then the actor's schedule is there, from its actor, in its zone, next on Sundays
    assert set(rows) == {"weekly-digests", HOURLY_PING, SUNDAY_REPORT}
    assert rows["weekly-digests"]["kind"] == "crontab"
    report = rows[SUNDAY_REPORT]
    assert (report["kind"], report["actor"], report["cron"], report["timezone"]) == (
        "actor",
        SUNDAY_REPORT,
        "0 3 * * sun",
        "Europe/Paris",
    )
    upcoming = [datetime.fromisoformat(t).astimezone(ZoneInfo("Europe/Paris")) for t in report["next"]]
    assert len(upcoming) == 3 and all((t.isoweekday(), t.hour, t.minute) == (7, 3, 0) for t in upcoming)
    assert report["description"] == "The week's report, on Sunday at 03:00 Paris time."
    # And the table says where each comes from
    monkeypatch.setenv("COLUMNS", "200")
    table = CliRunner().invoke(app, ["schedules"])
    assert table.exit_code == 0, table.output
    sources = {}
    for line in table.output.splitlines():
        for name in ("weekly-digests", SUNDAY_REPORT):
            if line.strip("│ ").startswith(name):
                sources[name] = line.split("│")[2].strip()
    assert sources == {"weekly-digests": "crontab", SUNDAY_REPORT: "actor"}
