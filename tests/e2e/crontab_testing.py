"""Crontabs for the scheduler e2e tests (EDUJOBS_SCHEDULER_CRONTAB=tests.e2e.crontab_testing:NAME)."""

from __future__ import annotations

from schedules.crontab import Schedule

NONE: tuple[Schedule, ...] = ()
UNKNOWN_ACTOR = (Schedule("nightly-typo", "maintenance.run_cleanupp", "0 2 * * *"),)
