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
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a Paris schedule that last fired at 18:30 Paris time (17:30 UTC) on Wednesday 25 November
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("EDUJOBS_SCHEDULER_CRONTAB", "tests.e2e.crontab_testing:NONE")
    add_schedule(
        engine,
        "parents-evening-reminder",
        "notifications.send_weekly_digests",
        {},
        cron="30 18 * * wed",
        timezone="Europe/Paris",
        now=at("2026-11-20T10:00"),
    )
    s = scheduler(engine, Outbox())
    s.start(now=at("2026-11-20T10:00"))
    s.tick(at("2026-11-25T18:30:05"))
    # When the operator lists the schedules (a wide terminal, so that rows do not wrap)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["schedules"])
    # Then the last run and the next ones read in Paris time, each with its zone
    assert result.exit_code == 0, result.output
    assert "2026-11-25 18:30 CET enqueued" in result.output
    assert "2026-12-02 18:30 CET" in result.output
    assert "17:30" not in result.output
