"""The HTTP API of the analytics reports (``ops.reports``), added to the app by ``ops.api``.

- ``POST /v1/reports``: request a report (type, parameters, format, requested_by, fresh) → 202
  with the report (or 200 with a ready one from the cache);
- ``GET /v1/reports``: the caller's reports, newest first; ``GET /v1/reports/{id}``: status,
  progress and the download link once ready; ``GET /v1/reports/{id}/file``: the file, streamed;
- ``POST /v1/reports/{id}/cancel``: stop it.

Scopes: ``reports`` requests reports and sees those its token requested; ``reports:all`` sees
every report (the scheduled ones too). Another token's report is 404, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from brokers.client import Client, PublishError
from contracts.errors import EdujobsError
from ops.api_models import DB_INT_MAX
from ops.auth import Caller, authenticate
from ops.reports import cancel_report, report_view, request_report
from store import reports
from store.models import Report
from store.storage import ObjectNotFoundError, Storage, content_type_of, get_storage

ReportId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="A report's id")]

CHUNK = 256 * 1024


class ReportIn(BaseModel):
    type: str = Field(examples=["course-performance"], max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict, description="See contracts.report_params")
    format: str = Field(default="pdf", examples=["pdf", "xlsx", "csv", "json"], max_length=8)
    requested_by: int | None = Field(
        default=None, description="The user told when it is ready (report_ready)"
    )
    fresh: bool = Field(default=False, description="Compute it again even if an identical one is cached")


def _requester(caller: Caller) -> Caller:
    if not (caller.allows("reports") or caller.allows("reports:all")):
        raise HTTPException(403, "this token lacks the scope 'reports'")
    return caller


def add_report_routes(
    app: FastAPI, *, engine: Engine, client: Client, storage: Storage | None, cache_seconds: float
) -> None:
    def visible(report_id: int, caller: Caller) -> Report:
        report = reports.get(engine, report_id)
        if report is None or not (caller.allows("reports:all") or report.requested_token == caller.name):
            raise HTTPException(404, f"no report {report_id}")
        return report

    def link(request: Request, report: Report) -> str | None:
        return str(request.url_for("report_file", report_id=report.id)) if report.status == "ready" else None

    @app.post("/v1/reports", status_code=202, tags=["reports"])
    def post_report(
        body: ReportIn, request: Request, caller: Annotated[Caller, Depends(authenticate)]
    ) -> JSONResponse:
        """Request a report; 202 with its id and status (200 when served ready from the cache)."""
        _requester(caller)
        try:
            view = request_report(
                engine,
                client,
                report_type=body.type,
                parameters=body.parameters,
                fmt=body.format,
                requested_by=body.requested_by,
                fresh=body.fresh,
                requested_token=caller.name,
                cache_seconds=cache_seconds,
            )
        except PublishError as e:
            raise HTTPException(503, f"RabbitMQ did not confirm: {e}") from None
        except EdujobsError as e:
            raise HTTPException(422, str(e)) from None
        report = reports.get(engine, view["id"])
        assert report is not None
        view["download_url"] = link(request, report)
        return JSONResponse(view, status_code=200 if view["cached"] else 202)

    @app.get("/v1/reports", tags=["reports"])
    def list_reports(
        caller: Annotated[Caller, Depends(authenticate)], limit: int = 50
    ) -> list[dict[str, Any]]:
        """The reports this token requested (every report with ``reports:all``), newest first."""
        _requester(caller)
        mine = None if caller.allows("reports:all") else caller.name
        found = reports.list_reports(engine, requested_token=mine, limit=max(1, min(limit, 500)))
        return [report_view(engine, report) for report in found]

    @app.get("/v1/reports/{report_id}", tags=["reports"])
    def get_report(
        report_id: ReportId, request: Request, caller: Annotated[Caller, Depends(authenticate)]
    ) -> dict[str, Any]:
        """Status, progress, and the download link once ready."""
        _requester(caller)
        report = visible(report_id, caller)
        return report_view(engine, report) | {"download_url": link(request, report)}

    @app.post("/v1/reports/{report_id}/cancel", tags=["reports"])
    def post_cancel(report_id: ReportId, caller: Annotated[Caller, Depends(authenticate)]) -> dict[str, Any]:
        """Stop a queued or running report."""
        _requester(caller)
        report = visible(report_id, caller)
        state = cancel_report(engine, report, by=f"token:{caller.name}")
        if state != "cancelled":
            raise HTTPException(409, f"report {report_id} cannot be cancelled: its job is {state}")
        return {"id": report_id, "status": "cancelled"}

    @app.get("/v1/reports/{report_id}/file", tags=["reports"], name="report_file")
    def report_file(
        report_id: ReportId, caller: Annotated[Caller, Depends(authenticate)]
    ) -> StreamingResponse:
        """The report's file, streamed from storage."""
        _requester(caller)
        report = visible(report_id, caller)
        if report.status != "ready" or not report.storage_key:
            raise HTTPException(409, f"report {report_id} is {report.status}: no file to download")
        files = storage if storage is not None else get_storage()
        try:
            source = files.open(report.storage_key)
        except ObjectNotFoundError:
            raise HTTPException(410, f"report {report_id}'s file is gone from storage") from None

        def chunks() -> Iterator[bytes]:
            with source:
                while chunk := source.read(CHUNK):
                    yield chunk

        name = report.storage_key.rsplit("/", 1)[-1]
        return StreamingResponse(
            chunks(),
            media_type=content_type_of(name),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
