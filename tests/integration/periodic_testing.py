"""Actors that declare their schedule with periodiq's ``periodic=cron(...)``, for the scheduler tests
(``EDUJOBS_SCHEDULER_ACTORS=tests.integration.periodic_testing``).

Importing this module declares them on the test process's broker (``tests.stub``); ``contracts``
registers their contracts for the duration of a test only (a fixture), so the published schemas and
every other test see the real actors alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import pytest
from periodiq import cron

from contracts.registry import _CONTRACTS, ActorContract, Contract

SUNDAY_REPORT = "testing.sunday_report"
HOURLY_PING = "testing.hourly_ping"


@dramatiq.actor(
    queue_name="maintenance",
    actor_name=SUNDAY_REPORT,
    time_limit=60_000,
    periodic=cron("0 3 * * sun"),  # periodiq's own scheduler never fires this one
    periodic_timezone="Europe/Paris",
)
def sunday_report() -> None:
    """The week's report, on Sunday at 03:00 Paris time."""


@dramatiq.actor(
    queue_name="maintenance",
    actor_name=HOURLY_PING,
    time_limit=60_000,
    periodic=cron("@hourly"),
    periodic_misfire="skip",
    periodic_grace_seconds=300,
)
def hourly_ping() -> None:
    """A ping at the top of every hour (EDUJOBS_SCHEDULE_TIMEZONE)."""


class NoArguments(Contract):
    pass


@contextmanager
def contracts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The contracts of these actors, registered until the block ends."""
    with monkeypatch.context() as patch:
        for name in (SUNDAY_REPORT, HOURLY_PING):
            patch.setitem(_CONTRACTS, name, ActorContract(name, "maintenance", "normal", NoArguments))
        yield
