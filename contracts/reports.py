"""Contracts of the reports domain: the scheduled monthly reports and the analytics reports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from contracts.errors import ContractError
from contracts.registry import Contract, register
from contracts.report_params import ReportFormat, ReportType, check_parameters

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


@register("reports.generate_report", queue="reports", priority="low")
class GenerateReport(Contract):
    """One analytics report (``contracts.report_params``) in one format, stored, and announced to
    ``requested_by`` (``report_ready``). With ``report_id`` it fills that pending ``reports`` row
    (``edujobs reports request``, ``POST /v1/reports``); without, it makes one, reusing a ready
    identical report of the last ``EDUJOBS_REPORT_CACHE_SECONDS`` unless ``fresh``."""

    type: ReportType
    parameters: dict[str, Any] = Field(default_factory=dict)
    format: ReportFormat
    requested_by: PositiveInt | None = Field(default=None, description="The user told when it is ready")
    report_id: PositiveInt | None = None
    fresh: bool = False

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        report_type = info.data.get("type")
        if report_type is None:
            return value  # the type's own error says what is wrong
        try:
            checked = check_parameters(report_type, value)
        except ContractError as e:
            raise ValueError(str(e)) from None
        data: dict[str, Any] = checked.model_dump(mode="json", exclude_none=True)
        return data


@register("reports.send_scheduled_reports", queue="reports", priority="low")
class SendScheduledReports(Contract):
    """The scheduled analytics reports: ``course-performance`` (last month) to each admin, or
    ``instructor-analytics`` (last week) to each instructor about their own courses."""

    type: Literal["course-performance", "instructor-analytics"]
    format: ReportFormat = "pdf"
