"""Analytics report benchmark: ``python -m bench.reports [--quick] [--students N ...]``.

The student-progress report (one row per student and course: grades, attendance, missed
assignments, lesson views) over 10,000 and 100,000 seeded students (3 courses each, 10 graded
assignments per course: 30 grade rows a student; ``store.seed``) in PostgreSQL, in each format.
Each report is made by ``actors.reports.service.generate`` (the worker's code: server-side cursor,
writer, copy to local storage) in a fresh process, whose peak RSS (``VmHWM``) is reported
with its seconds and rows/s. Side by side, PostgreSQL's own ``COPY (the same query) TO STDOUT``
(CSV) of the same rows, as the rate a CSV export cannot beat.

Targets: peak RSS < 300 MB at 100,000 students and <= 1.2x the 10,000-student figure (memory
bounded, not growing with rows); CSV rows/s >= 0.5x COPY's. The CSV is given two ways: the whole
report (its summary and trend are two more passes over grades and attendance, which COPY of the
rows does not make) and its rows section alone (the same query as COPY's, through the cursor and
the writer). Figures go to
``var/bench/reports.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import psycopg

from bench.report import start_run
from store.db import make_engine
from store.migrate import upgrade
from store.seed import seed
from tests.services import postgres_database

OUTPUT = Path("var/bench/reports.json")
FORMATS = ("csv", "json", "xlsx", "pdf")
REPORT = "student-progress"
RSS_LIMIT_MB = 300
RSS_GROWTH = 1.2
COPY_RATIO = 0.5


def render_once(url: str, fmt: str, storage_dir: str) -> dict[str, Any]:
    """Make the report once in this process (``--render``); its figures as a dict."""
    from actors.reports.service import ReportContext, generate
    from store.storage import LocalStorage

    engine = make_engine(url)
    timings: dict[str, float] = {}
    context = ReportContext(
        engine=engine,
        storage=LocalStorage(storage_dir),
        cache_seconds=0,
        keep_days=1,
        link_base="http://bench",
        notify=lambda *_: None,
        progress=lambda _percent: None,
        timings=timings,
    )
    started = time.perf_counter()
    result = generate(context, report_type=REPORT, parameters={}, fmt=fmt, requested_by=None, fresh=True)
    seconds = time.perf_counter() - started
    rows_section = timings.get("students", seconds)
    return {
        "format": fmt,
        "rows_section_seconds": round(rows_section, 2),
        "rows_section_rows_per_s": round((result["rows"] - 10) / rows_section) if fmt != "pdf" else None,
        "parts_seconds": {name: round(value, 2) for name, value in timings.items()},
        "seconds": round(seconds, 2),
        "rows": result["rows"],
        "rows_per_s": round(result["rows"] / seconds),
        "size_bytes": result["size_bytes"],
        "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
    }


def peak_rss_kb() -> int:
    """This process's peak RSS: ``VmHWM``, the high-water mark of its own memory map. Not
    ``ru_maxrss``: Linux carries that across exec, so a child would report its parent's RSS at the
    fork (the benchmark's, holding the seed) whenever that is higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def copy_baseline(url: str) -> dict[str, Any]:
    """PostgreSQL's ``COPY (the report's row query) TO STDOUT WITH CSV``, written to a file."""
    from actors.reports.queries import build_report
    from contracts.report_params import resolve_parameters

    engine = make_engine(url)
    section = build_report(REPORT, resolve_parameters(REPORT, {}), "postgresql").sections[0]
    compiled = section.query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    with engine.connect() as connection:
        raw = cast(psycopg.Connection[Any], connection.connection.driver_connection)
        query = psycopg.ClientCursor(raw).mogrify(str(compiled), compiled.params)
        rows, size = 0, 0
        started = time.perf_counter()
        with (
            tempfile.TemporaryFile() as out,
            raw.cursor() as cursor,
            cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy,
        ):
            for chunk in copy:
                out.write(chunk)
                size += len(chunk)
                rows += bytes(chunk).count(b"\n")
        seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": round(seconds, 2),
        "rows": rows,
        "rows_per_s": round(rows / seconds),
        "size_bytes": size,
    }


def run_size(students: int, console: Any) -> dict[str, Any]:
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        started = time.perf_counter()
        summary = seed(engine, students=students, seed=42, graded_per_course=10)
        seeded = time.perf_counter() - started
        # Statistics for the planner and hint bits set once, as on a database in use: otherwise
        # the first report after a bulk load pays for both (and is timed against a warm COPY).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()
        console.print(f"{students:,} students seeded in {seeded:.0f}s ({summary.grades:,} grades)")
        results = []
        with tempfile.TemporaryDirectory() as storage_dir:
            for fmt in FORMATS:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.reports", "--render", url, fmt, storage_dir],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(figures)
                console.print(
                    f"  {fmt:5} {figures['seconds']:7.2f}s {figures['rows']:>9,} rows "
                    f"{figures['rows_per_s']:>9,} rows/s  peak RSS {figures['peak_rss_mb']:6.1f} MB",
                    highlight=False,
                )
        copy = copy_baseline(url)
        csv = next(r for r in results if r["format"] == "csv")
        csv_rate, section_rate = csv["rows_per_s"], csv["rows_section_rows_per_s"]
        console.print(
            f"  COPY  {copy['seconds']:7.2f}s {copy['rows']:>9,} rows {copy['rows_per_s']:>9,} rows/s"
            f"  (whole CSV report / COPY = {csv_rate / copy['rows_per_s']:.2f}; the rows section "
            f"{csv['rows_section_seconds']:.2f}s, {section_rate:,} rows/s: / COPY = "
            f"{section_rate / copy['rows_per_s']:.2f})",
            highlight=False,
        )
        return {
            "students": students,
            "grade_rows": summary.grades,
            "seed_seconds": round(seeded, 1),
            "formats": results,
            "copy": copy,
            "csv_over_copy": round(csv_rate / copy["rows_per_s"], 2),
            "csv_rows_section_over_copy": round(section_rate / copy["rows_per_s"], 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, nargs="*", default=None, help="sizes (default 10000 100000)")
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000 students: a smoke run")
    parser.add_argument("--render", nargs=3, metavar=("URL", "FORMAT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        print(json.dumps(render_once(*args.render)))
        return 0
    console = start_run()
    sizes = args.students or ([1_000, 5_000] if args.quick else [10_000, 100_000])
    runs = [run_size(n, console) for n in sizes]
    small, large = runs[0], runs[-1]
    peak = {r["students"]: max(f["peak_rss_mb"] for f in r["formats"]) for r in runs}
    verdict = {
        "peak_rss_mb_at_largest": peak[large["students"]],
        "rss_under_300_mb": peak[large["students"]] < RSS_LIMIT_MB,
        "rss_growth": round(peak[large["students"]] / peak[small["students"]], 2),
        "rss_growth_within_1_2": peak[large["students"]] <= RSS_GROWTH * peak[small["students"]],
        "csv_report_over_copy_at_largest": large["csv_over_copy"],
        "csv_report_at_least_half_of_copy": large["csv_over_copy"] >= COPY_RATIO,
        "csv_rows_section_over_copy_at_largest": large["csv_rows_section_over_copy"],
        "csv_rows_section_at_least_half_of_copy": large["csv_rows_section_over_copy"] >= COPY_RATIO,
    }
    console.print(verdict)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps({"report": REPORT, "runs": runs, "targets": verdict}, indent=2))
    console.print(f"figures written to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
