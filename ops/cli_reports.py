"""``edujobs reports``: request an analytics report, list them, show one, download its file, cancel.

``request TYPE --param k=v ... --format F [--fresh] [--for USER_ID]``: a parameter given twice, or
with commas (``--param course_ids=1,2``), is a list; everything is checked against the report
type's contract (``contracts.report_params``) before anything is sent, and a bad value exits 2
naming the field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from contracts.errors import EdujobsError
from contracts.report_params import REPORT_TYPES
from ops.cli_common import AsJson, Operator, database, fail

reports_app = typer.Typer(
    help="Analytics reports: request, list, show, download, cancel.", no_args_is_help=True
)
console = Console()

LIST_PARAMETERS = ("course_ids",)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs as parameters (``course_ids`` and repeated keys become lists); exit 2 if malformed."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise fail(f"--param {pair!r}: expected NAME=VALUE, e.g. --param start_date=2026-09-01", 2)
        if key in LIST_PARAMETERS:
            parameters.setdefault(key, []).extend(v.strip() for v in value.split(",") if v.strip())
        elif key in parameters:
            raise fail(f"--param {key} given twice", 2)
        else:
            parameters[key] = value
    return parameters


@reports_app.command("request")
def request(
    report_type: Annotated[str, typer.Argument(metavar="TYPE", help=", ".join(REPORT_TYPES))],
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME=VALUE (repeatable)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="pdf, xlsx, csv or json")] = "pdf",
    fresh: Annotated[bool, typer.Option("--fresh", help="Compute it again even if one is cached")] = False,
    requested_by: Annotated[
        int | None, typer.Option("--for", help="User id told when it is ready (report_ready)")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Request a report: served at once from the cache, or queued (follow it with `reports show ID`)."""
    from brokers.client import PublishError, default_client
    from brokers.settings import get_settings
    from ops.reports import request_report

    try:
        view = request_report(
            database(),
            default_client(),
            report_type=report_type,
            parameters=parse_params(param or []),
            fmt=fmt,
            requested_by=requested_by,
            fresh=fresh,
            requested_token="cli",
            cache_seconds=get_settings().report_cache_seconds,
        )
    except PublishError as e:
        raise fail(str(e), 1) from None
    except EdujobsError as e:
        raise fail(str(e), 2) from None
    if as_json:
        print(json.dumps(view, default=str))
    elif view["cached"]:
        console.print(f"report {view['id']} is ready (cached): `edujobs reports download {view['id']} FILE`")
    else:
        console.print(
            f"report {view['id']} queued (job {view['message_id']}): `edujobs reports show {view['id']}`"
        )


@reports_app.command("list")
def list_reports(limit: Annotated[int, typer.Option(min=1, max=500)] = 20, as_json: AsJson = False) -> None:
    """The newest analytics reports with their status and progress."""
    from ops.reports import report_view
    from store import reports

    engine = database()
    views = [report_view(engine, report) for report in reports.list_reports(engine, limit=limit)]
    if as_json:
        print(json.dumps(views, default=str))
        return
    table = Table("id", "type", "format", "status", "progress", "rows", "created")
    for view in views:
        rows = "" if view["rows"] is None else f"{view['rows']:,}"
        created = str(view["created_at"])[:19].replace("T", " ")
        table.add_row(
            str(view["id"]),
            view["type"],
            view["format"],
            view["status"],
            f"{view['progress']}%",
            rows,
            created,
        )
    console.print(table)


def _report(report_id: int) -> Any:
    from store import reports

    report = reports.get(database(), report_id)
    if report is None:
        raise fail(f"no report {report_id} (see `edujobs reports list`)")
    return report


@reports_app.command("show")
def show(report_id: Annotated[int, typer.Argument(metavar="ID")], as_json: AsJson = False) -> None:
    """A report's status, progress, parameters, rows, size and expiry."""
    from ops.reports import report_view

    view = report_view(database(), _report(report_id))
    if as_json:
        print(json.dumps(view, default=str))
        return
    table = Table(show_header=False)
    for key, value in view.items():
        table.add_row(
            key, "" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)
        )
    console.print(table)


@reports_app.command("download")
def download(
    report_id: Annotated[int, typer.Argument(metavar="ID")],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write it ('-': standard output)")],
) -> None:
    """Copy a ready report's file from storage to FILE (streamed)."""
    import sys

    from store.storage import ObjectNotFoundError, get_storage

    report = _report(report_id)
    if report.status != "ready" or not report.storage_key:
        raise fail(f"report {report_id} is {report.status}: no file to download yet")
    try:
        source = get_storage().open(report.storage_key)
    except ObjectNotFoundError:
        raise fail(f"report {report_id}'s file is gone from storage (expired?)") from None
    with source:
        if str(file) == "-":
            shutil.copyfileobj(source, sys.stdout.buffer)
            return
        with file.open("wb") as target:
            shutil.copyfileobj(source, target)
    console.print(f"wrote {file} ({file.stat().st_size:,} bytes)", highlight=False)


@reports_app.command("cancel")
def cancel(report_id: Annotated[int, typer.Argument(metavar="ID")], operator: Operator = None) -> None:
    """Stop a queued or running report."""
    from ops.dlq import default_operator
    from ops.reports import cancel_report

    state = cancel_report(database(), _report(report_id), by=operator or default_operator())
    if state != "cancelled":
        raise fail(f"report {report_id} cannot be cancelled: its job is {state}")
    console.print(f"cancelled report {report_id}")
