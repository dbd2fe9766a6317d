"""Requesting analytics reports and following them: the code behind ``POST /v1/reports``, ``GET
/v1/reports/{id}`` and ``edujobs reports ...``.

``request_report`` validates the request (type, format, parameters: a ``ContractError`` names the
bad field), answers from the cache (a ready identical report of the last
``EDUJOBS_REPORT_CACHE_SECONDS``) unless ``fresh``, else records a pending ``reports`` row, sends
``reports.generate_report`` for it through ``brokers.client`` and records the job as enqueued, so
its progress can be followed at once. ``report_view`` joins a report with its job's state and
progress; a report whose job was cancelled shows ``cancelled``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from brokers.client import Client
from contracts.errors import ContractError
from contracts.registry import get_contract
from contracts.report_params import REPORT_FORMATS, resolve_parameters
from store import reports
from store.jobs import JobStore, cancel
from store.models import Report, User

ACTOR = "reports.generate_report"


def request_report(
    engine: Engine,
    client: Client,
    *,
    report_type: str,
    parameters: dict[str, Any],
    fmt: str,
    requested_by: int | None = None,
    fresh: bool = False,
    requested_token: str | None = None,
    cache_seconds: float = 1800.0,
) -> dict[str, Any]:
    """The report (``report_view``), served from the cache or queued; ``cached`` says which."""
    if fmt not in REPORT_FORMATS:
        raise ContractError(f"format: unknown report format {fmt!r}; known: {', '.join(REPORT_FORMATS)}")
    resolved = resolve_parameters(report_type, parameters)
    if requested_by is not None:
        with Session(engine) as session:
            if session.get(User, requested_by) is None:
                raise ContractError(f"requested_by: no user {requested_by}")
    if not fresh:
        cached = reports.find_cached(engine, report_type, resolved, fmt, max_age_seconds=cache_seconds)
        if cached is not None:
            return report_view(engine, cached) | {"cached": True}
    report = reports.create_pending(
        engine, report_type, resolved, fmt, requested_by=requested_by, requested_token=requested_token
    )
    payload = {
        "type": report_type,
        "format": fmt,
        "parameters": resolved,
        "requested_by": requested_by,
        "report_id": report.id,
        "fresh": fresh,
    }
    try:
        message_id = client.send(ACTOR, payload)
    except Exception as e:
        reports.set_fields(engine, report.id, status="failed", error=f"could not be queued: {e}"[:2000])
        raise
    reports.set_fields(engine, report.id, message_id=message_id)
    JobStore(engine).record_enqueued(message_id, ACTOR, get_contract(ACTOR).queue, user_id=requested_by)
    queued = reports.get(engine, report.id)
    assert queued is not None
    return report_view(engine, queued) | {"cached": False}


def report_view(engine: Engine, report: Report) -> dict[str, Any]:
    """The report's fields with its job's ``progress`` (100 once ready) and ``job_state``."""
    fields = reports.report_fields(report)
    job = JobStore(engine).get(report.message_id) if report.message_id else None
    fields["job_state"] = job.state if job is not None else None
    fields["progress"] = 100 if report.status == "ready" else (job.progress if job is not None else 0)
    if job is not None and job.state == "cancelled" and report.status in ("pending", "running", "failed"):
        fields["status"] = "cancelled"
    return fields


def cancel_report(engine: Engine, report: Report, *, by: str) -> str:
    """Cancel the report's job (queued: skipped; running: it stops at its next progress point);
    return the job's state afterwards."""
    if report.message_id is None:
        return "unknown"
    return cancel(engine, report.message_id, by=by, reason=f"report {report.id} cancelled")
