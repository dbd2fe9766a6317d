"""``edujobs schedules`` (list, add, remove) and ``edujobs scheduler`` (run the scheduler process)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ops.cli_common import AsJson, Operator, database, fail
from ops.dlq import default_operator

schedules_app = typer.Typer(
    help="Schedules: the crontab, periodic actors and run-time schedules, their next and last runs.",
    invoke_without_command=True,
)
console = Console()


def _context(*, with_actors: bool = False) -> tuple[Any, Any, str]:
    from brokers.settings import get_settings
    from schedules.scheduler import ScheduleError
    from schedules.service import load_crontab, load_schedules

    settings = get_settings()
    try:
        # The periodic actors only for the listing: importing every actor takes a second or two.
        crontab = load_schedules(settings) if with_actors else load_crontab(settings.scheduler_crontab)
    except ScheduleError as e:
        raise fail(str(e), 2) from None
    return database(), crontab, settings.schedule_timezone


@schedules_app.callback()
def schedules(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Every schedule (crontab, periodic actors, run-time) with its next three fire times (in its own
    time zone) and its last run."""
    if ctx.invoked_subcommand is not None:
        return
    from schedules.scheduler import list_schedules

    engine, crontab, timezone = _context(with_actors=True)
    rows = list_schedules(engine, crontab, timezone)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("schedule", "source", "actor", "when", "time zone", "misfire", "next runs", "last run")
    for row in rows:
        last = row["last_fire"]
        tz = row["timezone"]
        last_text = "never" if last is None else f"{_local(last['fire_time'], tz)} {last['status']}"
        table.add_row(
            row["name"],
            row["kind"],
            row["actor"],
            row["cron"],
            tz,
            row["misfire"],
            "\n".join(_local(t, tz) for t in row["next"]) or "none",
            last_text,
        )
    console.print(table)


def _local(iso: str, timezone: str) -> str:
    """``2026-11-29 03:00 CET``: in the schedule's zone, marked (a bare time next to others misleads)."""
    from schedules.cron import zone

    return datetime.fromisoformat(iso).astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M %Z")


@schedules_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name for the schedule, e.g. winter-announcement")],
    actor: Annotated[str, typer.Argument(help="The actor, e.g. notifications.send_bulk_email")],
    payload: Annotated[str, typer.Argument(help="The actor's arguments as a JSON object")],
    at: Annotated[
        str | None, typer.Option(help="Once, at this local date and time: '2026-12-01 09:00'")
    ] = None,
    cron: Annotated[str | None, typer.Option(help="Recurring: a cron expression, e.g. '0 9 * * mon'")] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone (default EDUJOBS_SCHEDULE_TIMEZONE)")
    ] = None,
    priority: Annotated[str | None, typer.Option(help="critical, high, normal, low or bulk")] = None,
    misfire: Annotated[
        str, typer.Option(help="catch_up (run late, once) or skip (drop late fires)")
    ] = "catch_up",
    grace: Annotated[int, typer.Option(help="With --misfire skip: seconds late a fire may still run")] = 600,
    replace: Annotated[bool, typer.Option(help="Replace a run-time schedule of the same name")] = False,
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Create a run-time schedule (one-off with --at, recurring with --cron); it survives restarts."""
    from schedules.scheduler import ScheduleError, add_schedule, next_fire_times
    from store import audit

    engine, _crontab, default_timezone = _context()
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as e:
        raise fail(
            f"PAYLOAD is not valid JSON ({e.msg} at position {e.pos}): pass a JSON object", 2
        ) from None
    if not isinstance(data, dict):
        raise fail("PAYLOAD must be a JSON object of the actor's arguments", 2)
    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise fail(f"--at {at!r} is not a date and time: write e.g. '2026-12-01 09:00'", 2) from None
    try:
        job = add_schedule(
            engine,
            name,
            actor,
            data,
            at=when,
            cron=cron,
            timezone=timezone or default_timezone,
            priority=priority,
            misfire=misfire,
            grace_seconds=grace,
            replace=replace,
        )
    except ScheduleError as e:
        raise fail(str(e), 2) from None
    by = operator or default_operator()
    audit.record(
        engine, actor=by, action="schedule.add", target=name, details={"actor": actor, "cron": cron, "at": at}
    )
    upcoming = [t.isoformat() for t in next_fire_times(job.trigger, job.next_run_time, 3)]
    if as_json:
        print(json.dumps({"name": name, "next": upcoming}))
    else:
        console.print(f"scheduled {name}: next {', '.join(upcoming)}", highlight=False)


@schedules_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The run-time schedule's name")],
    operator: Operator = None,
    as_json: AsJson = False,
) -> None:
    """Remove a run-time schedule (crontab schedules change in code)."""
    from schedules.scheduler import ScheduleError, remove_schedule
    from store import audit

    engine, _crontab, _timezone = _context()
    try:
        remove_schedule(engine, name)
    except ScheduleError as e:
        raise fail(str(e), 1) from None
    audit.record(engine, actor=operator or default_operator(), action="schedule.remove", target=name)
    if as_json:
        print(json.dumps({"name": name, "removed": True}))
    else:
        console.print(f"removed {name}", highlight=False)


def scheduler() -> None:
    """Run the scheduler: enqueue every schedule's fires once, on time (one leader among replicas)."""
    from brokers.settings import get_settings
    from schedules.scheduler import ScheduleError
    from schedules.service import run
    from store.migrate import NotMigratedError

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(settings)
    except ScheduleError as e:
        raise fail(f"the scheduler cannot start: {e}", 2) from None
    except NotMigratedError as e:
        raise fail(f"the scheduler cannot start: {e}", 1) from None
