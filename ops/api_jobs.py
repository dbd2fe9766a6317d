"""What operators see of a job (``GET /v1/jobs/{id}``, ``edujobs jobs show``): personal data redacted
unless revealed, and every reveal audited.

A job's ``error`` is an exception's text, and those quote people: Twilio's errors carry the phone
number (``The 'To' number +33612345678 is not a valid phone number``), SendGrid's the address, a
template error the value it choked on. ``ops:read`` is the dashboards' and the web page's scope, so
the error (and the result summary) is shown through ``middleware.scrubbing`` (e-mail addresses,
phone numbers, tokens and secrets replaced by ``[Filtered]``), as dead letters are. The text as
recorded takes an explicit reveal (``ops:write`` in the API, ``--reveal`` in the CLI), written to
the audit log (``jobs.reveal``: who, which job) before anything is shown: no audit, no reveal.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from middleware.scrubbing import scrub_data, scrub_text
from store import audit
from store.jobs import JobStore, job_fields
from store.models import JobRecord


def job_view(job: JobRecord, *, reveal: bool = False) -> dict[str, Any]:
    """``job_fields`` with the error and result redacted unless ``reveal``; ``revealed`` says which."""
    fields = job_fields(job)
    if not reveal:
        if fields["error"]:
            fields["error"] = scrub_text(fields["error"])
        if fields["result"] is not None:
            fields["result"] = scrub_data(fields["result"])
    fields["revealed"] = reveal
    return fields


def show_job(
    engine: Engine, message_id: str, *, reveal: bool = False, operator: str
) -> dict[str, Any] | None:
    """The job as ``job_view`` shows it, or None if no job is recorded under ``message_id``. A reveal
    is audited under ``operator`` first (a failure to audit raises: nothing is revealed)."""
    job = JobStore(engine).get(message_id)
    if job is None:
        return None
    if reveal:
        audit.record(engine, actor=operator, action="jobs.reveal", target=message_id[:255])
    return job_view(job, reveal=reveal)
