"""Schedules declared on actors (periodiq's ``periodic=cron('...')``), collected beside the crontab.

The scheduler, ``edujobs schedules`` and the API import the modules named by
``EDUJOBS_SCHEDULER_ACTORS`` (``actors``: every domain) and read the actors declared in them that
carry a ``periodic`` option (``middleware.periodic`` declares and checks it). Each becomes a
``Schedule`` named after its actor, with ``source="actor"``: the scheduler then runs it exactly like a
crontab entry (the same fire records, lease, time zone and misfire policy). Its time zone is the
actor's ``periodic_timezone`` option, else ``EDUJOBS_SCHEDULE_TIMEZONE``; its misfire policy
``periodic_misfire`` (``catch_up`` by default) with ``periodic_grace_seconds`` (600). It sends the
actor no arguments, as periodiq does.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq.broker

from middleware.periodic import PeriodicError, check_periodic, cron_expression
from schedules.cron import Cron, CronError
from schedules.crontab import Schedule
from schedules.jobs import ScheduleError


def schedule_of(actor: dramatiq.Actor[Any, Any]) -> Schedule:
    """The schedule an actor's ``periodic*`` options declare; ``ScheduleError`` saying why not."""
    options = actor.options
    try:
        check_periodic(actor.actor_name, options)
        expression = cron_expression(options["periodic"], actor=actor.actor_name)
    except PeriodicError as e:
        raise ScheduleError(str(e)) from None
    doc = (getattr(actor.fn, "__doc__", None) or "").strip()
    return Schedule(
        actor.actor_name,
        actor.actor_name,
        _as_written(options["periodic"], expression),
        timezone=options.get("periodic_timezone"),
        misfire=options.get("periodic_misfire", "catch_up"),
        grace_seconds=options.get("periodic_grace_seconds", 600),
        description=doc.splitlines()[0] if doc else "",
        source="actor",
    )


def _as_written(spec: object, expression: str) -> str:
    """The text the actor wrote (``*/15 * * * *``, ``0 3 * * sun``) when edujobs reads it exactly as
    periodiq parsed it, else the text written from periodiq's parse (``1-31`` restricts the day for
    cron, not for periodiq)."""
    written = getattr(spec, "parsed_from", None)
    if not isinstance(written, str):
        return expression
    try:
        ours = Cron.parse(written)
    except CronError:
        return expression
    return written if _meaning(ours) == _meaning(Cron.parse(expression)) else expression


def _meaning(cron: Cron) -> tuple[object, ...]:
    return tuple(getattr(cron, f.name) for f in dataclasses.fields(cron) if f.name != "expression")


def _declared_in(actor: dramatiq.Actor[Any, Any], modules: Sequence[str]) -> bool:
    module = str(getattr(actor.fn, "__module__", ""))
    return any(module == name or module.startswith(name + ".") for name in modules)


def periodic_schedules(modules: Iterable[str]) -> tuple[Schedule, ...]:
    """The schedules of the periodic actors declared in ``modules`` (and their submodules), which are
    imported first; by actor name. ``ScheduleError`` if a module cannot be imported."""
    names = [name.strip() for name in modules if name.strip()]
    if not names:
        return ()
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ScheduleError(f"cannot import the actors module {name!r}: {e}") from None
    broker = dramatiq.broker.global_broker  # not get_broker(): that would make a RabbitMQ broker
    if broker is None:
        return ()
    return tuple(
        schedule_of(actor)
        for _, actor in sorted(broker.actors.items())
        if "periodic" in actor.options and _declared_in(actor, names)
    )


def check_names(crontab: Sequence[Schedule]) -> None:
    """Raise ``ScheduleError`` when two schedules share a name, saying where each is declared."""
    seen: dict[str, Schedule] = {}
    for entry in crontab:
        other = seen.get(entry.name)
        if other is None:
            seen[entry.name] = entry
            continue
        if other.source == entry.source == "crontab":
            raise ScheduleError(f"two crontab entries are named {entry.name!r}")
        crontab_actor = other.actor if other.source == "crontab" else entry.actor
        raise ScheduleError(
            f"the schedule {entry.name!r} is declared twice: in the crontab (actor {crontab_actor}) and by "
            f"periodic= on the actor {entry.name!r}; remove one of them, or rename the crontab entry"
        )
