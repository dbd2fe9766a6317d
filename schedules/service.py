"""The scheduler process (``edujobs scheduler``): configuration, reporting, signals.

Reporting of each fire: the Prometheus gauge ``edujobs_schedule_last_enqueued_timestamp_seconds``
(when the last fire of each schedule was enqueued; filled from the record at start-up and on taking
the lead, so a monthly job has its series after a restart) and counter
``edujobs_schedule_fires_total`` (by schedule and outcome: enqueued, failed, skipped, duplicate),
served on ``EDUJOBS_SCHEDULER_METRICS_PORT``; the workers' Metrics middleware adds
``edujobs_schedule_last_success_timestamp_seconds`` (when the job itself last succeeded). When
``EDUJOBS_SENTRY_DSN`` is set, a Sentry Crons check-in per fire of each recurring schedule, whose
monitor carries the schedule's crontab and time zone, so Sentry alerts when a fire does not come:
``ok`` when enqueued, ``error`` when sending failed or a fire was skipped for being late (once per
tick and schedule); none for a fire coalesced into a catch-up run or sent by another scheduler.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import FrameType

from apscheduler.job import Job
from prometheus_client import Counter, Gauge, start_http_server

from brokers.settings import Settings
from schedules.cron import CronTrigger
from schedules.crontab import Schedule
from schedules.scheduler import Fire, ScheduleError, Scheduler

logger = logging.getLogger(__name__)

LAST_ENQUEUED = Gauge(
    "edujobs_schedule_last_enqueued_timestamp_seconds",
    "When the last fire of a schedule was enqueued (UNIX time).",
    ["schedule"],
)
FIRES = Counter("edujobs_schedule_fires_total", "Fires of a schedule by outcome.", ["schedule", "outcome"])


def load_crontab(reference: str) -> tuple[Schedule, ...]:
    """The crontab named ``module:attribute`` (``EDUJOBS_SCHEDULER_CRONTAB``)."""
    module_name, _, attribute = reference.partition(":")
    try:
        crontab = getattr(importlib.import_module(module_name), attribute or "CRONTAB")
    except (ImportError, AttributeError) as e:
        raise ScheduleError(f"cannot load the crontab {reference!r}: {e}") from None
    if not all(isinstance(entry, Schedule) for entry in crontab):
        raise ScheduleError(f"{reference!r} is not a sequence of schedules.crontab.Schedule")
    return tuple(crontab)


def report(fire: Fire, job: Job) -> None:
    """Record a fire in Prometheus and, for a recurring schedule, check in with Sentry Crons."""
    FIRES.labels(fire.schedule, fire.status).inc()
    if fire.status == "enqueued":
        LAST_ENQUEUED.labels(fire.schedule).set_to_current_time()
    if not isinstance(job.trigger, CronTrigger):
        return
    if fire.status == "duplicate" or (fire.status == "skipped" and not fire.alert):
        return
    import sentry_sdk
    from sentry_sdk.crons import capture_checkin
    from sentry_sdk.crons.consts import MonitorStatus

    if not sentry_sdk.get_client().is_active():
        return
    grace = job.misfire_grace_time
    capture_checkin(
        monitor_slug=f"edujobs-{fire.schedule}",
        status=MonitorStatus.OK if fire.status == "enqueued" else MonitorStatus.ERROR,
        monitor_config={
            "schedule": {"type": "crontab", "value": job.trigger.expression},
            "timezone": job.trigger.timezone,
            "checkin_margin": max(1, int(grace // 60)) if grace is not None else 10,
            "max_runtime": 5,
        },
    )


def report_last_enqueued(last: Mapping[str, datetime]) -> None:
    """Set the gauge of each schedule's last enqueue from the record (a restart, a new leader)."""
    for schedule, enqueued_at in last.items():
        LAST_ENQUEUED.labels(schedule).set(enqueued_at.timestamp())


def build(
    settings: Settings, crontab: Sequence[Schedule] | None = None, holder: str | None = None
) -> Scheduler:
    from schedules.fire import send
    from store.db import get_engine
    from store.migrate import check_migrated

    engine = get_engine()
    check_migrated(engine)  # the scheduler starts only on a migrated database: it creates no table
    return Scheduler(
        engine=engine,
        send=send,
        crontab=load_crontab(settings.scheduler_crontab) if crontab is None else crontab,
        default_timezone=settings.schedule_timezone,
        holder=holder or f"{socket.gethostname()}:{os.getpid()}",
        lease_seconds=settings.scheduler_lease_seconds,
        on_fire=report,
        on_last_enqueued=report_last_enqueued,
    )


def run(settings: Settings) -> None:
    """Run the scheduler until SIGTERM or SIGINT; ``ScheduleError`` if the crontab is invalid,
    ``NotMigratedError`` if the database is not migrated."""
    from brokers.stack import start_sentry

    start_sentry(settings)
    scheduler = build(settings)
    scheduler.start()  # validates the crontab first: a bad entry stops start-up here
    if settings.scheduler_metrics_port:
        start_http_server(settings.scheduler_metrics_port, addr=settings.metrics_host)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Scheduler stopping (signal %d).", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info(
        "Scheduler %s running %d crontab schedules (time zone %s), ticking every %.1f s.",
        scheduler.holder,
        len(scheduler.crontab),
        settings.schedule_timezone,
        settings.scheduler_tick_seconds,
    )
    scheduler.run(stop, interval=settings.scheduler_tick_seconds)
    logger.info("Scheduler stopped.")
