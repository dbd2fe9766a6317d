"""The report actors. Monthly (compliance audit, system health): gather (``actors.reports.monthly``),
store (``actors.reports.output``), then tell the admins (``notifications.notify_user``, template
``report_ready``). Analytics (``reports.generate_report``): ``actors.reports.service``; and the
scheduled analytics reports (``reports.send_scheduled_reports``) fan out one request per person."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.base import actor, current_idempotency_key, current_message_id, enqueue, notify, report_progress
from actors.reports import monthly
from actors.reports.output import save_report
from store.models import Report, User


def _tell_admins(engine: Any, report: Report, name: str) -> int:
    with Session(engine) as session:
        admins = session.scalars(select(User.id).where(User.role == "admin")).all()
    for admin_id in admins:
        notify(
            admin_id,
            "report_ready",
            {
                "report_name": name,
                "report_format": report.format,
                "download_url": report.storage_uri,
                "expires_at": report.expires_at.date().isoformat() if report.expires_at else None,
            },
            f"report:{report.id}:{admin_id}",
        )
    return len(admins)


@actor("reports.generate_compliance_audit", time_limit=3_600_000, max_retries=3, max_backoff=1_800_000)
def generate_compliance_audit(month: str | None = None) -> dict[str, Any]:
    from store.db import get_engine
    from store.storage import get_storage

    engine, storage = get_engine(), get_storage()
    data = monthly.compliance_audit(engine, month)
    rows = data.pop("_access_rows")
    label = data["month"]
    summary = save_report(
        engine,
        storage,
        kind="compliance_audit",
        fmt="json",
        params={"month": label},
        filename=f"compliance-audit-{label}.json",
        data=json.dumps(data, indent=2, default=str).encode(),
    )
    access = save_report(
        engine,
        storage,
        kind="compliance_audit_access",
        fmt="csv",
        params={"month": label},
        filename=f"compliance-audit-{label}-record-access.csv",
        data=monthly.access_csv(rows),
    )
    told = _tell_admins(engine, summary, f"Compliance audit {label}")
    return {
        "month": label,
        "report_ids": [summary.id, access.id],
        "record_accesses": len(rows),
        "operator_actions": data["operator_actions"]["total"],
        "admins_told": told,
    }


@actor("reports.generate_system_health_summary", time_limit=1_800_000, max_retries=3, max_backoff=1_800_000)
def generate_system_health_summary(month: str | None = None) -> dict[str, Any]:
    from store.db import get_engine
    from store.storage import get_storage

    engine = get_engine()
    data = monthly.system_health(engine, month)
    label = data["month"]
    report = save_report(
        engine,
        get_storage(),
        kind="system_health_summary",
        fmt="json",
        params={"month": label},
        filename=f"system-health-{label}.json",
        data=json.dumps(data, indent=2, default=str).encode(),
    )
    told = _tell_admins(engine, report, f"System health {label}")
    return {"month": label, "report_id": report.id, "jobs": data["jobs"]["total"], "admins_told": told}


@actor("reports.generate_report", time_limit=1_800_000, max_retries=2, max_backoff=300_000)
def generate_report(
    type: str,
    format: str,
    parameters: dict[str, Any] | None = None,
    requested_by: int | None = None,
    report_id: int | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    from actors.reports.service import ReportContext, generate
    from brokers.settings import get_settings
    from store.db import get_engine
    from store.storage import get_storage

    settings = get_settings()
    context = ReportContext(
        engine=get_engine(),
        storage=get_storage(),
        cache_seconds=settings.report_cache_seconds,
        keep_days=settings.report_keep_days,
        link_base=settings.api_public_url or f"http://{settings.api_host}:{settings.api_port}",
        notify=notify,
        progress=report_progress,
        message_id=current_message_id(),
    )
    return generate(
        context,
        report_type=type,
        parameters=parameters or {},
        fmt=format,
        requested_by=requested_by,
        report_id=report_id,
        fresh=fresh,
    )


@actor("reports.send_scheduled_reports", time_limit=600_000, max_retries=3, max_backoff=600_000)
def send_scheduled_reports(type: str, format: str = "pdf") -> dict[str, Any]:
    from actors.reports.schedule import scheduled_requests
    from store.db import get_engine

    key = current_idempotency_key()
    sent = 0
    for user_id, parameters in scheduled_requests(get_engine(), type):
        payload = {"type": type, "format": format, "parameters": parameters, "requested_by": user_id}
        enqueue("reports.generate_report", payload, idempotency_key=f"{key}:{type}:{user_id}")
        sent += 1
    return {"type": type, "requests": sent}
