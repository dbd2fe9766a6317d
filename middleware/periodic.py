"""Schedules declared on the actor: periodiq's ``periodic=cron('...')`` option, run by edujobs' scheduler.

An actor may say when it runs with periodiq's own option::

    from periodiq import cron

    @actor("maintenance.purge_temp_files", time_limit=..., max_backoff=..., periodic=cron("0 3 * * sun"))

Dramatiq refuses an actor option that no middleware declares; ``PeriodicSchedules`` declares
``periodic`` and the options that complete it (``periodic_timezone``, ``periodic_misfire``,
``periodic_grace_seconds``), and checks them when the actor is declared, so a schedule edujobs cannot
run stops the import (the worker's, the scheduler's) with a clear error. It has no other hook:
periodiq's own middleware and scheduler are not used (they drop a fire handled more than 30 s late
and never fire Sundays; see README "Schedules"). ``schedules.periodic`` collects these actors into
the scheduler's schedules, beside the crontab.

``cron_expression`` turns periodiq's ``CronSpec`` into edujobs' cron text exactly: periodiq expands
each field into the list of values it matches, and the text is written from those lists (``*`` for
a full field), so the meaning is periodiq's parse, with cron's Sunday (``0`` and ``7``) rather than
periodiq's scheduler's, which compares ``isoweekday()`` (Sunday = 7) against 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dramatiq import Actor, Broker
from dramatiq.middleware import Middleware, MiddlewareError

#: The actor options ``PeriodicSchedules`` declares.
OPTIONS = frozenset({"periodic", "periodic_timezone", "periodic_misfire", "periodic_grace_seconds"})
MISFIRE_POLICIES = ("catch_up", "skip")
#: (periodiq's attribute, edujobs' field name, lowest, highest) of the five fields, in cron order.
_FIELDS = (
    ("minute", "minute", 0, 59),
    ("hour", "hour", 0, 23),
    ("dom", "day-of-month", 1, 31),
    ("month", "month", 1, 12),
    ("dow", "day-of-week", 0, 7),
)


class PeriodicError(MiddlewareError, ValueError):
    """Raised when an actor's ``periodic`` options cannot be run by edujobs' scheduler, saying why."""


def cron_expression(spec: object, *, actor: str = "the actor") -> str:
    """The five-field cron text of periodiq's ``cron(...)`` (a ``periodiq.CronSpec``)."""
    fields = []
    for attribute, what, low, high in _FIELDS:
        values = getattr(spec, attribute, None)
        if not isinstance(values, Sequence) or not values:
            raise PeriodicError(
                f"{actor}: periodic must be periodiq's cron('m h dom mon dow'), not {type(spec).__name__}"
            )
        if any(type(v) is not int or not low <= v <= high for v in values):
            raise PeriodicError(
                f"{actor}: periodic={spec!s}: {what} values {sorted(values)} are outside {low}-{high}"
            )
        if attribute == "dow":
            values = sorted({v % 7 for v in values})  # 7 is Sunday too
            high = 6
        fields.append("*" if set(values) == set(range(low, high + 1)) else _ranges(sorted(set(values))))
    return " ".join(fields)


def _ranges(values: list[int]) -> str:
    parts, start = [], values[0]
    for previous, current in zip(values, [*values[1:], None], strict=True):
        if current != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            if current is not None:
                start = current
    return ",".join(parts)


def check_periodic(actor: str, options: dict[str, Any]) -> None:
    """Raise ``PeriodicError`` if the ``periodic*`` options of ``actor`` cannot be scheduled."""
    extra = sorted(name for name in OPTIONS - {"periodic"} if name in options)
    if "periodic" not in options:
        if extra:
            raise PeriodicError(f"{actor}: {', '.join(extra)} without periodic=cron('...')")
        return
    cron_expression(options["periodic"], actor=actor)
    timezone = options.get("periodic_timezone")
    if timezone is not None:
        try:
            ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise PeriodicError(f"{actor}: periodic_timezone {timezone!r} is not an IANA time zone") from None
    misfire = options.get("periodic_misfire", "catch_up")
    if misfire not in MISFIRE_POLICIES:
        raise PeriodicError(f"{actor}: periodic_misfire {misfire!r} is not catch_up or skip")
    grace = options.get("periodic_grace_seconds", 600)
    if type(grace) is not int or grace < 1:
        raise PeriodicError(f"{actor}: periodic_grace_seconds must be a positive number of seconds")


class PeriodicSchedules(Middleware):
    """Declares periodiq's ``periodic`` actor option (and edujobs' companions) and checks them."""

    @property
    def actor_options(self) -> set[str]:
        return set(OPTIONS)

    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        # emit_before lets only a MiddlewareError through: a bad schedule stops the import.
        check_periodic(actor.actor_name, actor.options)
