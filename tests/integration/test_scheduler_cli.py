"""``edujobs schedules`` as an operator reads it: every time in the schedule's own zone, marked."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ops.cli import app
from schedules.scheduler import add_schedule
from tests.integration.test_scheduler import Outbox, at, engine, scheduler  # noqa: F401  (fixture)


def test_the_listing_shows_next_and_last_runs_in_the_schedules_zone_with_the_zone_marked(
    engine: Engine,  # noqa: F811
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a Paris schedule that last fired at 07:00 Paris time (06:00 UTC) on Monday 23 November
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", database_url)
    monkeypatch.setenv("EDUJOBS_SCHEDULER_CRONTAB", "tests.e2e.crontab_testing:NONE")
    add_schedule(
        engine,
        "monday-digest",
        "notifications.send_weekly_digests",
        {},
        cron="0 7 * * mon",
        timezone="Europe/Paris",
        now=at("2026-11-20T10:00"),
    )
    s = scheduler(engine, Outbox())
    s.start(now=at("2026-11-20T10:00"))
    s.tick(at("2026-11-23T07:00:05"))
    # When the operator lists the schedules (a wide terminal, so that rows do not wrap)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["schedules"])
    # Then the last run and the next ones read in Paris time, each with its zone
    assert result.exit_code == 0, result.output
    assert "2026-11-23 07:00 CET enqueued" in result.output
    assert "2026-11-30 07:00 CET" in result.output
    assert "06:00" not in result.output
