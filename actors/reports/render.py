"""Runs a report's queries and streams their rows into a file of the requested format.

Rows come from a server-side cursor (``stream_results`` with ``yield_per``: psycopg's named cursor
on PostgreSQL) ``YIELD_ROWS`` at a time, are rounded (``sections.cells``) and handed to the writer
one by one: nothing holds a whole section. For the PDF, a section whose row count is known
cheaply (``Section.estimate``) is read only as far as the PDF shows it. ``progress(percent)`` is
called as sections and rows go by (it may raise to stop: a cancelled job).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from actors.reports.pdf import PDF_MAX_ROWS, PdfWriter
from actors.reports.queries import build_report
from actors.reports.sections import cells
from actors.reports.writers import CsvWriter, JsonWriter, ReportWriter, XlsxWriter

YIELD_ROWS = 2_000
PROGRESS_EVERY = 5_000
EXTENSIONS = {"csv": "csv", "json": "json", "xlsx": "xlsx", "pdf": "pdf"}


def make_writer(fmt: str, path: Path, report_type: str) -> ReportWriter:
    if fmt == "csv":
        return CsvWriter(path)
    if fmt == "json":
        return JsonWriter(path)
    if fmt == "xlsx":
        return XlsxWriter(path)
    if fmt == "pdf":
        return PdfWriter(path, report_type=report_type)
    raise ValueError(f"unknown report format {fmt!r}")


def render_report(
    engine: Engine,
    report_type: str,
    parameters: dict[str, Any],
    fmt: str,
    path: Path,
    *,
    progress: Callable[[float], None] | None = None,
) -> int:
    """Write the report to ``path``; return how many section rows it holds."""
    tell = progress or (lambda _percent: None)
    spec = build_report(report_type, parameters, engine.dialect.name)
    writer = make_writer(fmt, path, report_type)
    total = 0
    try:
        with engine.connect() as connection:
            summary_row = connection.execute(spec.summary).one()
            summary = list(zip(spec.summary_columns, cells(summary_row, spec.summary_columns), strict=True))
            writer.begin(spec.title, parameters, summary, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"))
            tell(5)
            sections = len(spec.sections)
            for index, section in enumerate(spec.sections):
                expected = None
                if section.estimate is not None:
                    expected = int(connection.execute(section.estimate).scalar_one())
                query = section.query
                if fmt == "pdf" and expected is not None:
                    query = query.limit(PDF_MAX_ROWS)
                writer.section(section)
                count = 0
                result = connection.execution_options(stream_results=True, yield_per=YIELD_ROWS).execute(
                    query
                )
                for row in result:
                    writer.row(cells(row, section.columns))
                    count += 1
                    if expected and count % PROGRESS_EVERY == 0:
                        tell(5 + 90 * (index + min(1.0, count / expected)) / sections)
                rows = expected if fmt == "pdf" and expected is not None else count
                writer.end_section(rows)
                total += rows
                tell(5 + 90 * (index + 1) / sections)
    finally:
        writer.close()
    return total
