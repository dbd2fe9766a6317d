"""Runs a report's queries and streams their rows into a file of the requested format.

Rows come from a server-side cursor (``stream_results`` with ``yield_per``: psycopg's named cursor
on PostgreSQL) ``YIELD_ROWS`` at a time, are rounded (``sections.cells``) and handed to the writer
one by one: nothing holds a whole section. For the PDF, a section whose row count is known
cheaply (``Section.estimate``) is read only as far as the PDF shows it. ``progress(percent)`` is
called as sections and rows go by (it may raise to stop: a cancelled job).
"""

from __future__ import annotations

import time
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
    timings: dict[str, float] | None = None,
) -> int:
    """Write the report to ``path``; return how many section rows it holds. ``timings`` (if
    given) gets the seconds each part took: ``summary`` and each section's name."""
    tell = progress or (lambda _percent: None)
    spec = build_report(report_type, parameters, engine.dialect.name)
    writer = make_writer(fmt, path, report_type)
    total = 0
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                # A cursor's plan is by default chosen for its first 10% of rows (nested loops);
                # a report reads them all: plan for that (hash joins), as COPY or a plain query does.
                connection.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
            started = time.perf_counter()
            summary_row = connection.execute(spec.summary).one()
            if timings is not None:
                timings["summary"] = time.perf_counter() - started
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
                started = time.perf_counter()
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
                if timings is not None:
                    timings[section.name] = time.perf_counter() - started
                total += rows
                tell(5 + 90 * (index + 1) / sections)
    finally:
        writer.close()
    return total
