"""The requested analytics reports (``reports`` rows): create, find a cached one, follow, list.

A request is identified by ``request_hash(type, resolved parameters, format)``; a ``ready`` report
with the same hash, finished within the cache window and not expired, is served again instead of
computing it anew (unless the request says ``fresh``). ``kind`` holds the report type.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from store.models import Report


def request_hash(report_type: str, parameters: dict[str, Any], fmt: str) -> str:
    return hashlib.sha256(json.dumps([report_type, parameters, fmt], sort_keys=True).encode()).hexdigest()


def find_cached(
    engine: Engine, report_type: str, parameters: dict[str, Any], fmt: str, *, max_age_seconds: float
) -> Report | None:
    """The newest ready report of this request finished within ``max_age_seconds``, if any."""
    if max_age_seconds <= 0:
        return None
    now = datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(
            select(Report)
            .where(
                Report.params_hash == request_hash(report_type, parameters, fmt),
                Report.kind == report_type,
                Report.format == fmt,
                Report.status == "ready",
                Report.completed_at >= now - timedelta(seconds=max_age_seconds),
                Report.expires_at > now,
            )
            .order_by(Report.completed_at.desc())
            .limit(1)
        ).first()


def create_pending(
    engine: Engine,
    report_type: str,
    parameters: dict[str, Any],
    fmt: str,
    *,
    requested_by: int | None,
    requested_token: str | None = None,
) -> Report:
    report = Report(
        kind=report_type,
        format=fmt,
        params=parameters,
        params_hash=request_hash(report_type, parameters, fmt),
        status="pending",
        requested_by=requested_by,
        requested_token=requested_token,
        created_at=datetime.now(UTC),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(report)
        session.commit()
    return report


def get(engine: Engine, report_id: int) -> Report | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Report, report_id)


def set_fields(engine: Engine, report_id: int, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(update(Report).where(Report.id == report_id).values(**values))


def list_reports(
    engine: Engine, *, requested_token: str | None = None, limit: int = 50, analytics_only: bool = True
) -> list[Report]:
    """The newest reports first (only those asked through ``requested_token`` if given)."""
    query = select(Report).order_by(Report.id.desc()).limit(limit)
    if requested_token is not None:
        query = query.where(Report.requested_token == requested_token)
    if analytics_only:
        from contracts.report_params import REPORT_TYPES

        query = query.where(Report.kind.in_(REPORT_TYPES))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(query))


def report_fields(report: Report) -> dict[str, Any]:
    """A report as the API and the CLI show it (without the job's progress, which ``store.jobs`` has)."""
    return {
        "id": report.id,
        "type": report.kind,
        "format": report.format,
        "parameters": report.params,
        "status": report.status,
        "message_id": report.message_id,
        "requested_by": report.requested_by,
        "rows": report.row_count,
        "size_bytes": report.size_bytes,
        "error": report.error,
        "created_at": report.created_at.isoformat() if report.created_at else None,
        "completed_at": report.completed_at.isoformat() if report.completed_at else None,
        "expires_at": report.expires_at.isoformat() if report.expires_at else None,
    }
