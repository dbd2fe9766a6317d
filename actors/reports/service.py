"""Requested analytics reports: serve one from the cache or make it, store it, say it is ready.

``generate`` is what ``reports.generate_report`` does (no Dramatiq here): resolve the parameters
(``contracts.report_params``), reuse a ready identical report of the last ``cache_seconds`` unless
``fresh`` (or fill the pending row the request made), render it into a temporary file
(``actors.reports.render``: rows streamed from the database), copy the file to storage (streamed),
mark the row ready with its expiry (the daily ``maintenance.run_cleanup`` deletes the file then),
and tell the requester through ``notify`` (``report_ready`` with the download link). A cancel
(``ProcessingCancelledError`` from ``progress``) or a failure marks the row ``failed`` with why.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from actors.reports.render import EXTENSIONS, render_report
from contracts.errors import PermanentError, ProcessingCancelledError
from contracts.report_params import resolve_parameters
from store import reports
from store.models import Report
from store.storage import Storage, content_type_of

logger = logging.getLogger(__name__)

TITLES = {
    "course-performance": "Course performance",
    "student-progress": "Student progress",
    "engagement-metrics": "Engagement metrics",
    "financial-summary": "Financial summary",
    "instructor-analytics": "Instructor analytics",
}


class ReportNotFoundError(PermanentError):
    """Raised when a message names a ``reports`` row that does not exist."""


@dataclass(frozen=True)
class ReportContext:
    engine: Engine
    storage: Storage
    cache_seconds: float
    keep_days: float
    link_base: str
    notify: Callable[[int, str, dict[str, Any], str], None]
    progress: Callable[[float], None]
    message_id: str | None = None
    timings: dict[str, float] | None = None


def download_link(link_base: str, report_id: int) -> str:
    return f"{link_base.rstrip('/')}/v1/reports/{report_id}/file"


def generate(
    context: ReportContext,
    *,
    report_type: str,
    parameters: dict[str, Any],
    fmt: str,
    requested_by: int | None,
    report_id: int | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    engine = context.engine
    resolved = resolve_parameters(report_type, parameters)
    if report_id is not None:
        report = reports.get(engine, report_id)
        if report is None:
            raise ReportNotFoundError(f"report {report_id} does not exist")
        if report.status == "ready":  # a redelivered message: done already
            return {"report_id": report.id, "status": "ready", "rows": report.row_count}
        resolved = report.params
    else:
        cached = (
            None
            if fresh
            else reports.find_cached(
                engine, report_type, resolved, fmt, max_age_seconds=context.cache_seconds
            )
        )
        if cached is not None:
            _tell(context, cached, requested_by, again=True)
            return {"report_id": cached.id, "status": "ready", "cached": True, "rows": cached.row_count}
        report = reports.create_pending(engine, report_type, resolved, fmt, requested_by=requested_by)
    reports.set_fields(engine, report.id, status="running", message_id=context.message_id, error=None)
    try:
        rows, stored_key, size, url = _make(context, report, resolved)
    except ProcessingCancelledError:
        reports.set_fields(engine, report.id, status="failed", error="cancelled while it was running")
        raise
    except Exception as e:
        reports.set_fields(engine, report.id, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    now = datetime.now(UTC)
    reports.set_fields(
        engine,
        report.id,
        status="ready",
        storage_key=stored_key,
        storage_uri=url,
        size_bytes=size,
        row_count=rows,
        completed_at=now,
        expires_at=now + timedelta(days=context.keep_days),
    )
    ready = reports.get(engine, report.id)
    assert ready is not None
    _tell(context, ready, requested_by)
    return {"report_id": report.id, "status": "ready", "cached": False, "rows": rows, "size_bytes": size}


def _make(context: ReportContext, report: Report, parameters: dict[str, Any]) -> tuple[int, str, int, str]:
    name = f"{report.kind}-{report.id}.{EXTENSIONS[report.format]}"
    with tempfile.TemporaryDirectory(prefix="edujobs-report-") as temp:
        path = Path(temp) / name
        rows = render_report(
            context.engine,
            report.kind,
            parameters,
            report.format,
            path,
            progress=context.progress,
            timings=context.timings,
        )
        context.progress(97)
        key = f"reports/{report.kind}/{datetime.now(UTC):%Y-%m-%d}/{name}"
        stored = context.storage.put_file(key, path, content_type=content_type_of(key))
    return rows, stored.key, stored.size, stored.url


def _tell(context: ReportContext, report: Report, requested_by: int | None, *, again: bool = False) -> None:
    if requested_by is None:
        return
    # Once per report and person; a cached report served again is news again (once per request).
    key = f"report:{report.id}:{requested_by}" + (f":{context.message_id}" if again else "")
    context.notify(
        requested_by,
        "report_ready",
        {
            "report_name": TITLES.get(report.kind, report.kind),
            "report_format": report.format,
            "download_url": download_link(context.link_base, report.id),
            "expires_at": report.expires_at.date().isoformat() if report.expires_at else None,
        },
        key,
    )
