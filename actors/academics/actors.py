"""The academics actors: thin wrappers over ``actors.academics.service`` (the work, on the database)."""

from __future__ import annotations

from datetime import date
from typing import Any

from actors.academics import service
from actors.base import actor, notify
from actors.reports.output import save_report


def _engine() -> Any:
    from store.db import get_engine

    return get_engine()


@actor("academics.detect_attendance_interventions", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def detect_attendance_interventions(
    absences: int | None = None, window_days: int | None = None, as_of: date | None = None
) -> dict[str, Any]:
    settings = service.AttendanceRule.from_settings()
    rule = service.AttendanceRule(absences or settings.absences, window_days or settings.window_days)
    return service.detect_attendance_interventions(
        _engine(),
        notify,
        rule=rule,
        as_of=date.fromisoformat(as_of) if isinstance(as_of, str) else as_of,
    )


@actor("academics.roll_up_attendance", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def roll_up_attendance(day: date | None = None) -> dict[str, Any]:
    return service.roll_up_attendance(_engine(), date.fromisoformat(day) if isinstance(day, str) else day)


@actor("academics.send_iep_review_reminders", time_limit=600_000, max_retries=3, max_backoff=600_000)
def send_iep_review_reminders(
    milestones: list[int] | None = None, as_of: date | None = None
) -> dict[str, Any]:
    return service.send_iep_review_reminders(
        _engine(),
        notify,
        milestones=milestones or [90, 60, 30],
        as_of=date.fromisoformat(as_of) if isinstance(as_of, str) else as_of,
    )


@actor("academics.send_grade_posting_digest", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def send_grade_posting_digest(hours: int = 24) -> dict[str, Any]:
    return service.send_grade_posting_digest(_engine(), notify, hours=hours)


@actor("academics.compute_performance_trends", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def compute_performance_trends(days: int = 30, stable_band: float = 0.25) -> dict[str, Any]:
    from store.storage import get_storage

    engine = _engine()
    data = service.performance_trends(engine, days=days, stable_band=stable_band)
    report = save_report(
        engine,
        get_storage(),
        kind="performance_trends",
        fmt="json",
        params={"days": days, "stable_band": stable_band},
        filename="performance-trends.json",
        data=service.as_json(data),
    )
    return {"report_id": report.id, "students": len(data["students"]), **data["summary"]}


@actor("academics.compute_resource_usage", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def compute_resource_usage(days: int = 7) -> dict[str, Any]:
    from store.storage import get_storage

    engine = _engine()
    data = service.resource_usage(engine, days=days)
    report = save_report(
        engine,
        get_storage(),
        kind="resource_usage",
        fmt="json",
        params={"days": days},
        filename="resource-usage.json",
        data=service.as_json(data),
    )
    return {"report_id": report.id, "courses": len(data["courses"]), "lessons": len(data["lessons"])}


@actor("academics.notify_inactive_users", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def notify_inactive_users(days: int = 14) -> dict[str, Any]:
    return service.notify_inactive_users(_engine(), notify, days=days)
