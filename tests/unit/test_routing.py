"""Routing a notification: channel order, quiet hours across midnight and DST, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from actors.notifications.routing import quiet_until, reachable_channels
from store.models import User

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = (time(21, 0), time(7, 0))


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "ends"),
    [
        (at(PARIS, 2026, 6, 10, 22, 30), at(PARIS, 2026, 6, 11, 7, 0)),  # evening: ends tomorrow 07:00
        (at(PARIS, 2026, 6, 11, 3, 0), at(PARIS, 2026, 6, 11, 7, 0)),  # after midnight: ends today
        (at(PARIS, 2026, 6, 11, 6, 59), at(PARIS, 2026, 6, 11, 7, 0)),
        (at(PARIS, 2026, 6, 11, 7, 0), None),  # the end is not quiet
        (at(PARIS, 2026, 6, 11, 20, 59), None),
        (at(PARIS, 2026, 6, 11, 21, 0), at(PARIS, 2026, 6, 12, 7, 0)),  # the start is quiet
    ],
)
def test_a_quiet_period_crossing_midnight(now: datetime, ends: datetime | None) -> None:
    assert quiet_until(*NIGHT, PARIS, now) == ends


def test_quiet_hours_follow_the_users_clock_across_dst_changes() -> None:
    # Given New York's clocks go forward on 8 March 2026 and back on 1 November 2026
    # When an SMS is due at 23:00 local time the night before each change
    spring = quiet_until(*NIGHT, NEW_YORK, at(NEW_YORK, 2026, 3, 7, 23, 0))
    autumn = quiet_until(*NIGHT, NEW_YORK, at(NEW_YORK, 2026, 10, 31, 23, 0))
    # Then it waits until 07:00 local time: 8 hours on the wall clock, 7 or 9 hours of real time
    assert spring is not None and spring.astimezone(NEW_YORK).hour == 7
    assert autumn is not None and autumn.astimezone(NEW_YORK).hour == 7
    assert (spring - at(NEW_YORK, 2026, 3, 7, 23, 0)).total_seconds() == 7 * 3600
    assert (autumn - at(NEW_YORK, 2026, 10, 31, 23, 0)).total_seconds() == 9 * 3600


def test_a_daytime_quiet_period_and_no_quiet_hours() -> None:
    assert quiet_until(time(12, 0), time(14, 0), PARIS, at(PARIS, 2026, 1, 5, 13, 0)) == at(
        PARIS, 2026, 1, 5, 14, 0
    )
    assert quiet_until(time(12, 0), time(14, 0), PARIS, at(PARIS, 2026, 1, 5, 15, 0)) is None
    assert quiet_until(time(0, 0), time(0, 0), PARIS, at(PARIS, 2026, 1, 5, 3, 0)) is None


def test_channels_follow_the_users_order_without_unreachable_or_opted_out_ones() -> None:
    user = User(
        id=1, email="a@example.edu", phone=None, push_tokens=["t"], opted_out=["push"],
        channel_order=["push", "sms", "email"], name="A", role="student",
    )  # fmt: skip
    channels, left_out = reachable_channels(user, None)
    assert channels == ["email"]
    assert left_out == ["push: opted out", "sms: no address"]
    # A sender's own order wins, repeats dropped
    assert reachable_channels(user, ["email", "email"])[0] == ["email"]
