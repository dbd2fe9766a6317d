"""periodiq's ``periodic=cron('...')`` read as edujobs' cron: exactly, Sundays included, or refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from periodiq import cron

from middleware.periodic import PeriodicError, PeriodicSchedules, check_periodic, cron_expression
from schedules.cron import Cron
from schedules.periodic import schedule_of


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("0 3 * * sun", "0 3 * * 0"),
        ("0 3 * * 0", "0 3 * * 0"),
        ("0 3 * * 7", "0 3 * * 0"),
        ("@weekly", "0 0 * * 0"),
        ("0 7 * * mon-fri", "0 7 * * 1-5"),
        ("*/15 * * * *", "0,15,30,45 * * * *"),
        ("0 0,12 1 */2 *", "0 0,12 1 1,3,5,7,9,11 *"),
        # periodiq reads a field that lists every value as unrestricted: so does the text written
        ("0 0 1-31 * mon", "0 0 * * 1"),
        ("5 4 * * 0-6", "5 4 * * *"),
    ],
)
def test_periodiq_specs_become_the_same_cron_expression(written: str, expected: str) -> None:
    assert cron_expression(cron(written)) == expected


def test_a_sunday_spec_fires_on_sundays_the_way_periodiq_does_not() -> None:
    # Given the three ways periodiq's scheduler never fires (verified with periodiq 0.14.0)
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    for written, hour in (("0 3 * * 0", 3), ("0 3 * * sun", 3), ("@weekly", 0)):
        spec = cron(written)
        sunday = datetime(2026, 11, 29, hour, 0, tzinfo=UTC)
        # periodiq's own check of that Sunday time says no (it compares isoweekday(), 7, with 0)
        assert not spec.validate(sunday)
        # Then edujobs' reading of the same spec fires at that time
        assert Cron.parse(cron_expression(spec)).next_after(saturday, UTC) == sunday


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"periodic": "0 3 * * *"}, "periodic must be periodiq's cron"),
        ({"periodic": cron("70 3 * * *")}, "minute values [70] are outside 0-59"),
        ({"periodic": cron("0 25 * * *")}, "hour values [25] are outside 0-23"),
        ({"periodic": cron("0 3 * * *"), "periodic_timezone": "Mars/Olympus"}, "not an IANA time zone"),
        ({"periodic": cron("0 3 * * *"), "periodic_misfire": "later"}, "is not catch_up or skip"),
        ({"periodic": cron("0 3 * * *"), "periodic_grace_seconds": 0}, "positive number of seconds"),
        ({"periodic_timezone": "UTC"}, "periodic_timezone without periodic=cron"),
    ],
)
def test_what_edujobs_cannot_run_is_refused_saying_why(options: dict[str, Any], error: str) -> None:
    with pytest.raises(PeriodicError) as raised:
        check_periodic("testing.nightly", options)
    assert error in str(raised.value)
    assert "testing.nightly" in str(raised.value)


def test_an_actor_with_a_bad_schedule_is_refused_when_declared() -> None:
    # Given a broker with the middleware that declares the option
    broker = StubBroker(middleware=[PeriodicSchedules()])
    # When an actor is declared with a time periodiq parses but no cron has
    with pytest.raises(PeriodicError, match="minute values"):

        @dramatiq.actor(broker=broker, actor_name="testing.bad_minute", periodic=cron("61 * * * *"))
        def bad_minute() -> None: ...

    # Then it is not declared, while a sound one is, and becomes a schedule of the same name
    @dramatiq.actor(
        broker=broker,
        actor_name="testing.sunday_report",
        periodic=cron("0 3 * * sun"),
        periodic_timezone="Europe/Paris",
        periodic_misfire="skip",
        periodic_grace_seconds=1800,
    )
    def sunday_report() -> None:
        """Sunday's report."""

    assert set(broker.actors) == {"testing.sunday_report"}
    schedule = schedule_of(broker.actors["testing.sunday_report"])
    assert (schedule.name, schedule.actor, schedule.cron, schedule.source) == (
        "testing.sunday_report",
        "testing.sunday_report",
        "0 3 * * sun",  # as written: edujobs reads it as periodiq parsed it
        "actor",
    )
    assert (schedule.timezone, schedule.misfire, schedule.grace_seconds) == ("Europe/Paris", "skip", 1800)
    assert schedule.description == "Sunday's report."


def test_without_the_middleware_dramatiq_refuses_the_option() -> None:
    broker = StubBroker(middleware=[])
    with pytest.raises(ValueError, match="periodic"):
        dramatiq.actor(broker=broker, actor_name="testing.orphan", periodic=cron("0 3 * * *"))(lambda: None)
