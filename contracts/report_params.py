"""The parameters of the five analytics reports, one pydantic model per report type.

A request names a report type, its parameters and a format; ``check_parameters`` validates the
parameters against the type's model (unknown names are refused) and says which field is wrong.
``resolve_parameters`` fills the default period (the 90 days up to today, UTC), so that two requests
for "the default" on the same day are the same request (the cache key is the resolved parameters).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from contracts.errors import ContractError

ReportType = Literal[
    "course-performance",
    "student-progress",
    "engagement-metrics",
    "financial-summary",
    "instructor-analytics",
]
ReportFormat = Literal["pdf", "xlsx", "csv", "json"]
REPORT_TYPES: tuple[str, ...] = ReportType.__args__  # type: ignore[attr-defined]
REPORT_FORMATS: tuple[str, ...] = ReportFormat.__args__  # type: ignore[attr-defined]
Grouping = Literal["day", "week", "month"]

DEFAULT_PERIOD_DAYS = 90
MAX_PERIOD_DAYS = 731
CourseIds = list[PositiveInt] | None


class ReportParameters(BaseModel):
    """What every report takes: a period (inclusive dates, UTC) and how its trend is grouped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_date: date | None = Field(default=None, description="First day (UTC); default end_date - 89 days")
    end_date: date | None = Field(default=None, description="Last day, included (UTC); default today")
    group_by: Grouping = Field(default="week", description="Trend rows per day, week (Monday) or month")

    @model_validator(mode="after")
    def _ordered(self) -> ReportParameters:
        if self.start_date and self.end_date:
            if self.end_date < self.start_date:
                raise ValueError("end_date must not be before start_date")
            if (self.end_date - self.start_date).days >= MAX_PERIOD_DAYS:
                raise ValueError(
                    f"the period (start_date to end_date) may span at most {MAX_PERIOD_DAYS} days"
                )
        return self


class CoursePerformanceParameters(ReportParameters):
    """Per course: enrolments, completion, average grade, grade distribution, engagement, trend."""

    course_ids: CourseIds = Field(default=None, max_length=1000, description="Only these courses")
    instructor_id: PositiveInt | None = Field(default=None, description="Only this instructor's courses")


class StudentProgressParameters(ReportParameters):
    """Per student and course: grades, completion, attendance, missed assignments; the trend."""

    student_id: PositiveInt | None = Field(default=None, description="Only this student")
    course_ids: CourseIds = Field(default=None, max_length=1000, description="Only these courses")


class EngagementMetricsParameters(ReportParameters):
    """Active users per day or week, lesson views, time spent, drop-off by lesson."""

    group_by: Grouping = Field(default="day", description="Activity rows per day, week or month")
    course_ids: CourseIds = Field(default=None, max_length=1000, description="Only these courses")


class FinancialSummaryParameters(ReportParameters):
    """Revenue, refunds and net by period and by course (the payments table)."""

    group_by: Grouping = Field(default="month", description="Rows per day, week or month")
    course_ids: CourseIds = Field(default=None, max_length=1000, description="Only these courses")


class InstructorAnalyticsParameters(ReportParameters):
    """Per instructor, and per course of theirs: performance and engagement."""

    instructor_id: PositiveInt | None = Field(default=None, description="Only this instructor")


PARAMETERS: dict[str, type[ReportParameters]] = {
    "course-performance": CoursePerformanceParameters,
    "student-progress": StudentProgressParameters,
    "engagement-metrics": EngagementMetricsParameters,
    "financial-summary": FinancialSummaryParameters,
    "instructor-analytics": InstructorAnalyticsParameters,
}


def parameters_model(report_type: str) -> type[ReportParameters]:
    try:
        return PARAMETERS[report_type]
    except KeyError:
        raise ContractError(
            f"type: unknown report type {report_type!r}; known: {', '.join(REPORT_TYPES)}"
        ) from None


def check_parameters(report_type: str, parameters: dict[str, Any]) -> ReportParameters:
    """The parameters as the type's model, or ``ContractError`` naming each bad field
    (``parameters.start_date: ...``)."""
    model = parameters_model(report_type)
    try:
        return model.model_validate(parameters)
    except ValidationError as e:
        problems = []
        for item in e.errors():
            where = ".".join(str(part) for part in item["loc"])
            problems.append(f"parameters{'.' + where if where else ''}: {item['msg']}")
        raise ContractError(f"invalid parameters for {report_type}: " + "; ".join(problems)) from None


def resolve_parameters(
    report_type: str, parameters: dict[str, Any], today: date | None = None
) -> dict[str, Any]:
    """Validated parameters with the default period filled in, as JSON (the cache key's input)."""
    checked = check_parameters(report_type, parameters)
    end = checked.end_date or today or datetime.now(UTC).date()
    start = checked.start_date or end - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    if end < start:
        raise ContractError(f"invalid parameters for {report_type}: parameters.start_date: is after today")
    resolved = checked.model_copy(update={"start_date": start, "end_date": end})
    data: dict[str, Any] = resolved.model_dump(mode="json", exclude_none=True)
    if "course_ids" in data:
        data["course_ids"] = sorted(set(data["course_ids"]))
    return data
