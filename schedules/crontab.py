"""The crontab: every recurring job of edujobs, in one declarative list.

Each entry names the actor (by name: the scheduler enqueues through ``brokers.client`` and never
imports actor code), its arguments, a cron expression (``schedules.cron``), a time zone (None: the
district's, ``EDUJOBS_SCHEDULE_TIMEZONE``), a priority (None: the actor's) and a misfire policy for
fires the scheduler could not make on time (it was down, or the database was):

- ``catch_up``: run once as soon as possible, however late (several missed fires make one run);
- ``skip``: drop a fire more than ``grace_seconds`` late, and wait for the next one.

Every fire is enqueued once (``schedules.scheduler``), with the idempotency key
``schedule:<name>:<fire time in UTC>``, so actors can tell a fire from its re-sending.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Misfire = Literal["catch_up", "skip"]
MISFIRE_POLICIES: tuple[str, ...] = ("catch_up", "skip")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Schedule:
    """One recurring job."""

    name: str
    actor: str
    cron: str
    payload: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    priority: str | None = None
    misfire: Misfire = "catch_up"
    grace_seconds: int = 600
    description: str = ""
    #: Where it is declared: ``crontab`` (this list) or ``actor`` (periodiq's ``periodic=cron(...)``
    #: option on the actor itself, collected by ``schedules.periodic``).
    source: str = "crontab"


CRONTAB: tuple[Schedule, ...] = (
    # Daily, 02:00: housekeeping and the nightly academics.
    Schedule(
        "daily-cleanup",
        "maintenance.run_cleanup",
        "0 2 * * *",
        description="Remove old job records, ledger entries, digested events, fires and expired reports.",
    ),
    Schedule(
        "daily-attendance-interventions",
        "academics.detect_attendance_interventions",
        "0 2 * * *",
        description="Open a tier-2 intervention for students absent on 3+ of the last 7 days with none open.",
    ),
    Schedule(
        "daily-attendance-rollup",
        "academics.roll_up_attendance",
        "0 2 * * *",
        description="Aggregate yesterday's attendance per course (analytics).",
    ),
    Schedule(
        "daily-backup",
        "maintenance.backup_database",
        "0 2 * * *",
        misfire="catch_up",
        description="Back the database up to storage and prune old backups.",
    ),
    Schedule(
        "daily-dead-letter-archive",
        "maintenance.archive_dead_letters",
        "30 2 * * *",
        misfire="catch_up",
        description="Archive the dead letters about to expire from each Q.XQ to storage.",
    ),
    Schedule(
        "daily-orphan-media-cleanup",
        "maintenance.clean_orphan_media",
        "45 2 * * *",
        description="Remove media files of deleted assets older than 24 hours; report files and bytes.",
    ),
    # Daily, 08:00.
    Schedule(
        "daily-iep-review-reminders",
        "academics.send_iep_review_reminders",
        "0 8 * * *",
        misfire="skip",
        grace_seconds=3 * 3600,
        description="Remind coordinators of IEP reviews due in 90, 60 and 30 days (once per milestone).",
    ),
    # Weekdays, 07:00.
    Schedule(
        "weekday-grade-digest",
        "academics.send_grade_posting_digest",
        "0 7 * * mon-fri",
        misfire="skip",
        grace_seconds=3 * 3600,
        description="Tell each student which grades were posted since the last digest.",
    ),
    # Sundays.
    Schedule(
        "weekly-performance-trends",
        "academics.compute_performance_trends",
        "0 3 * * sun",
        description="Each student's grade trend over the last 30 days.",
    ),
    Schedule(
        "weekly-resource-usage",
        "academics.compute_resource_usage",
        "0 3 * * sun",
        description="Views and learners per lesson and course over the last 7 days.",
    ),
    Schedule(
        "weekly-digest",
        "notifications.send_weekly_digests",
        "0 17 * * sun",
        misfire="catch_up",
        # Sunday 17:00, before the default quiet hours (21:00): the week's grades and reports, read
        # while the week is fresh; a digest caught up later still covers the 7 days before its run.
        description="Send each user one summary of the week's grades and reports.",
    ),
    Schedule(
        "weekly-inactive-users",
        "academics.notify_inactive_users",
        "0 9 * * sun",
        misfire="skip",
        grace_seconds=6 * 3600,
        description="Nudge students inactive for 14 days, with their missed assignments.",
    ),
    Schedule(
        "weekly-instructor-analytics",
        "reports.send_scheduled_reports",
        "0 6 * * mon",
        payload={"type": "instructor-analytics", "format": "pdf"},
        description="Each instructor's analytics of last week (their courses), as PDF by email.",
    ),
    # The 1st of the month.
    Schedule(
        "monthly-compliance-audit",
        "reports.generate_compliance_audit",
        "0 4 1 * *",
        description="Last month's IEP reviews, student-record access and operator actions (CSV and JSON).",
    ),
    Schedule(
        "monthly-archive",
        "maintenance.archive_old_data",
        "0 4 1 * *",
        description="Move access logs, job records and deliveries older than a year to cold storage.",
    ),
    Schedule(
        "monthly-audit-archive",
        "maintenance.archive_audit_logs",
        "30 4 1 * *",
        description="Move audit rows past the retention (7 years) to storage, checked, then delete them.",
    ),
    Schedule(
        "monthly-health-summary",
        "reports.generate_system_health_summary",
        "0 5 1 * *",
        description="Last month's jobs, failures, dead letters, deliveries and schedule fires.",
    ),
    Schedule(
        "monthly-course-performance",
        "reports.send_scheduled_reports",
        "0 6 1 * *",
        payload={"type": "course-performance", "format": "pdf"},
        description="Last month's course performance report, as PDF by email to each admin.",
    ),
)
