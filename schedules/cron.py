"""Cron expressions evaluated on the wall clock of a time zone, one fire per matching local time.

Why not APScheduler's own ``CronTrigger`` (3.11.3, verified here): in a DST zone
``CronTrigger(day=1, hour=0)`` skips from 1 March to 1 May; a daily 02:00 job fires twice on the
night clocks go back (02:00+02:00 and 02:00+01:00); and ``from_crontab`` reads day-of-week ``0`` as
Monday. ``CronTrigger`` below keeps APScheduler's trigger interface (so schedules live in its
SQLAlchemy job store) with the usual cron meaning:

- five fields, minute hour day-of-month month day-of-week; ``*``, lists ``a,b``, ranges ``a-b``,
  steps ``*/n`` and ``a-b/n``; month names ``jan``..``dec``; day names ``sun``..``sat``; day-of-week
  ``0`` and ``7`` are both Sunday; ``@hourly``, ``@daily``, ``@weekly`` (Sunday 00:00), ``@monthly``,
  ``@yearly``;
- when both day-of-month and day-of-week are restricted, a day matching either fires (as in Vixie cron);
- a local time that does not exist (clocks go forward) fires at the first instant after the gap, once;
- a local time that exists twice (clocks go back) fires at its first occurrence only, unless the hour
  field is ``*``: then at both (as Vixie cron and cronie do), so an hourly job does not lose the
  repeated hour while a daily 02:00 job still fires once. The second occurrence carries a fixed UTC
  offset (``+01:00``), since an aware ``ZoneInfo`` time compares by wall clock, ignoring ``fold``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger

from contracts.errors import EdujobsError

MONTHS = {
    name: n
    for n, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
DAYS = {name: n for n, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELD = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")
#: A schedule that matches no day within this many years (``0 0 31 2 *``) is refused.
SEARCH_YEARS = 8


class CronError(EdujobsError, ValueError):
    """Raised for an invalid cron expression or time zone, saying what is wrong."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Paris``); ``CronError`` if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC") from None


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = _FIELD.match(part)
        if not match:
            raise CronError(f"{what} {part!r} is not a value, range, list or step")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise CronError(f"{what} step must be at least 1")
        if span == "*":
            start, end = low, high
        else:
            bounds = [_value(v, names, what) for v in span.split("-")]
            start, end = bounds[0], bounds[-1]
            if step_text and len(bounds) == 1:
                end = high  # "5/15" means from 5 to the end, every 15
        for bound in (start, end):
            if not low <= bound <= high:
                raise CronError(f"{what} {bound} is out of range {low}-{high}")
        if start > end:
            raise CronError(f"{what} range {span!r} goes backwards")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int], what: str) -> int:
    if text.isdigit():
        return int(text)
    if text in names:
        return names[text]
    raise CronError(f"{what} {text!r} is not a number" + (f" or one of {', '.join(names)}" if names else ""))


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool
    any_weekday: bool
    any_hour: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = ALIASES.get(expression.strip().lower(), expression.strip().lower())
        fields = text.split()
        if len(fields) != 5:
            raise CronError(
                f"cron expression {expression!r} has {len(fields)} fields: "
                "write minute hour day-of-month month day-of-week, e.g. '0 2 * * *'"
            )
        minute, hour, day, month, weekday = fields
        weekdays = _field(weekday, 0, 7, DAYS, "day-of-week")
        return cls(
            expression=expression,
            minutes=_field(minute, 0, 59, {}, "minute"),
            hours=_field(hour, 0, 23, {}, "hour"),
            days=_field(day, 1, 31, {}, "day-of-month"),
            months=_field(month, 1, 12, MONTHS, "month"),
            weekdays=frozenset(d % 7 for d in weekdays),
            any_day=day == "*",
            any_weekday=weekday == "*",
            any_hour=hour == "*",
        )

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def local_times(self, start: datetime) -> list[datetime]:
        """The matching wall-clock times (naive) of ``start``'s day from ``start`` on."""
        if not self.day_matches(start.date()):
            return []
        found = []
        for hour in sorted(self.hours):
            if hour < start.hour:
                continue
            for minute in sorted(self.minutes):
                candidate = datetime.combine(start.date(), time(hour, minute))
                if candidate >= start:
                    found.append(candidate)
        return found

    def next_after(self, after: datetime, tz: tzinfo) -> datetime:
        """The first fire strictly after the aware instant ``after``, as an aware datetime in ``tz``."""
        local_after = after.astimezone(tz)
        # Start from the wall-clock minute after; a fold of the clock is handled by comparing instants.
        cursor = (local_after.replace(tzinfo=None) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        cursor -= timedelta(hours=2)  # a time just before a fall-back repeat may map earlier; look back
        day = cursor.date()
        limit = day + timedelta(days=366 * SEARCH_YEARS)
        start = cursor
        after_utc = after.astimezone(UTC)
        while day <= limit:
            # By instant, not in wall order: the second pass through a repeated hour comes after
            # the first one's later minutes.
            found = [
                instant
                for wall in self.local_times(start)
                for instant in self._instants(wall, tz)
                if instant.astimezone(UTC) > after_utc
            ]
            if found:
                return min(found, key=lambda instant: instant.astimezone(UTC))
            day += timedelta(days=1)
            start = datetime.combine(day, time(0, 0))
        raise CronError(f"cron expression {self.expression!r} never fires")

    def _instants(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        first = resolve(wall, tz)
        if not self.any_hour or first.replace(tzinfo=None) != wall:
            return [first]
        second = wall.replace(tzinfo=tz, fold=1)
        offset = second.utcoffset()
        if offset is None or offset == first.utcoffset():
            return [first]
        return [first, wall.replace(tzinfo=timezone(offset))]


def resolve(wall: datetime, tz: tzinfo) -> datetime:
    """The instant of the naive wall-clock time ``wall`` in ``tz``: the first occurrence of a time
    the clock shows twice; for a time it skips, the first existing wall time after it (the gap's end)."""
    probe = wall
    while not _exists(probe, tz):
        probe += timedelta(minutes=1)
    return probe.replace(tzinfo=tz, fold=0)


def _exists(wall: datetime, tz: tzinfo) -> bool:
    return wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


class CronTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger for a cron expression in a time zone, with the semantics above."""

    def __init__(self, expression: str, timezone: str) -> None:
        self.expression = expression
        self.timezone = timezone
        self.cron = Cron.parse(expression)
        self.tz = zone(timezone)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        if previous_fire_time is not None:
            return self.cron.next_after(previous_fire_time, self.tz)
        return self.cron.next_after(now - timedelta(microseconds=1), self.tz)

    def __getstate__(self) -> dict[str, object]:
        return {"version": 1, "expression": self.expression, "timezone": self.timezone}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(str(state["expression"]), str(state["timezone"]))  # type: ignore[misc]

    def __str__(self) -> str:
        return f"cron[{self.expression} {self.timezone}]"

    def __repr__(self) -> str:
        return f"CronTrigger({self.expression!r}, {self.timezone!r})"
