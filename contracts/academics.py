"""Contracts of the academics domain: the nightly and weekly jobs over grades, attendance and IEPs."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from contracts.registry import Contract, register


@register("academics.detect_attendance_interventions", queue="academics", priority="normal")
class DetectAttendanceInterventions(Contract):
    """Open a tier-2 attendance intervention (daily check-in, parent contact, attendance contract) for
    each student absent on ``absences`` days or more in the last ``window_days`` days who has no open
    one, and tell the instructor of the course they missed most."""

    absences: int | None = Field(
        default=None,
        ge=1,
        le=366,
        description="Days absent that open one; default EDUJOBS_INTERVENTION_ABSENCES (3).",
    )
    window_days: int | None = Field(
        default=None,
        ge=1,
        le=366,
        description="Days looked at, ending as_of; default EDUJOBS_INTERVENTION_WINDOW_DAYS (7).",
    )
    as_of: date | None = Field(default=None, description="Last day looked at; default yesterday (UTC).")


@register("academics.roll_up_attendance", queue="academics", priority="low")
class RollUpAttendance(Contract):
    """Count each course's present, absent, late and excused marks of one day (analytics)."""

    day: date | None = Field(default=None, description="The day; default yesterday (UTC).")


@register("academics.send_iep_review_reminders", queue="academics", priority="normal")
class SendIepReviewReminders(Contract):
    """Remind each IEP's coordinator 90, 60 and 30 days before its review is due, once per milestone."""

    milestones: list[int] = Field(
        default=[90, 60, 30],
        min_length=1,
        max_length=10,
        description="Days before the review is due.",
    )
    as_of: date | None = Field(default=None, description="The day; default today (UTC).")


@register("academics.send_grade_posting_digest", queue="academics", priority="low")
class SendGradePostingDigest(Contract):
    """Send each student one digest of the grades posted in the 24 hours before the run."""

    hours: int = Field(default=24, ge=1, le=24 * 7, description="How far back posted grades are collected.")


@register("academics.compute_performance_trends", queue="academics", priority="low")
class ComputePerformanceTrends(Contract):
    """Each active student's grade trend (slope of their scores) over the last days, as a JSON report."""

    days: int = Field(default=30, ge=7, le=365)
    stable_band: float = Field(
        default=0.25, ge=0, le=10, description="Points per day within which a trend is stable."
    )


@register("academics.compute_resource_usage", queue="academics", priority="low")
class ComputeResourceUsage(Contract):
    """Views and distinct learners per lesson and course over the last days, saved as a JSON report."""

    days: int = Field(default=7, ge=1, le=90)


@register("academics.notify_inactive_users", queue="academics", priority="low")
class NotifyInactiveUsers(Contract):
    """Nudge students who have not been active for ``days``, listing the assignments they missed."""

    days: int = Field(default=14, ge=1, le=365)
