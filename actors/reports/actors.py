"""The scheduled report actors: gather (``actors.reports.monthly``), store (``actors.reports.output``),
then tell the admins (``notifications.notify_user``, template ``report_ready``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.base import actor, notify
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
