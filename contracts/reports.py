"""Contracts of the reports domain (the scheduled monthly reports)."""

from __future__ import annotations

from pydantic import Field

from contracts.registry import Contract, register

MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


@register("reports.generate_compliance_audit", queue="reports", priority="normal")
class GenerateComplianceAudit(Contract):
    """Last month's compliance audit: IEPs started and reviewed, student-record access (FERPA), and
    operators' actions, as CSV and JSON in storage; the admins are told it is ready."""

    month: str | None = Field(default=None, pattern=MONTH, description="YYYY-MM; default last month (UTC).")


@register("reports.generate_system_health_summary", queue="reports", priority="low")
class GenerateSystemHealthSummary(Contract):
    """Last month's jobs by state and actor, failures, deliveries by channel and status, and schedule
    fires by outcome, as JSON in storage; the admins are told it is ready."""

    month: str | None = Field(default=None, pattern=MONTH, description="YYYY-MM; default last month (UTC).")
