"""Nightly intervention detection benchmark: ``python -m bench.interventions [--quick] [--students N ...]``.

``academics.detect_attendance_interventions`` (the seed's rule: absent on 3 days or more of the last
7 and no open attendance intervention: open a tier-2 one and tell the instructor) over N seeded
students in PostgreSQL: 3 courses each, 30 school days of attendance (90 marks a student, 9 million
rows at 100,000 students; about 3% of students often absent; ``store.seed`` with
``attendance_only``: users, courses, enrolments and attendance, nothing the detection does not read).

The detection runs in a fresh process (``--detect``: the worker's code, ``service``, with a notify
that only counts), whose peak RSS (``VmHWM``) is reported with its seconds, twice: the first run
opens the interventions (one transaction and one notification each), the second finds them all open
(the nightly run of a quiet night: the scan alone). Figures go to ``var/bench/interventions.json``;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.report import start_run
from bench.reports import peak_rss_kb
from store.db import make_engine
from store.migrate import upgrade
from store.seed import seed
from tests.services import postgres_database

OUTPUT = Path("var/bench/interventions.json")


def detect_once(url: str, as_of: str) -> dict[str, Any]:
    """Run the nightly detection once in this process (``--detect``); its figures as a dict."""
    from actors.academics import service

    engine = make_engine(url)
    told: list[str] = []
    started = time.perf_counter()
    counts = service.detect_attendance_interventions(
        engine,
        lambda _user, _template, _context, key: told.append(key),
        rule=service.AttendanceRule(absences=3, window_days=7),
        as_of=date.fromisoformat(as_of),
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": round(seconds, 2),
        **counts,
        "notifications": len(told),
        "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
    }


def run_size(students: int, console: Any) -> dict[str, Any]:
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        today = date.today()
        started = time.perf_counter()
        summary = seed(engine, students=students, seed=42, today=today, attendance_only=True)
        seeded = time.perf_counter() - started
        # Planner statistics and hint bits set once, as on a database in use.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()
        console.print(
            f"{students:,} students seeded in {seeded:.0f}s ({summary.attendance:,} attendance rows)",
            highlight=False,
        )
        as_of = (today - timedelta(days=1)).isoformat()
        runs = []
        for label in ("first run (opens)", "rerun (all open)"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.interventions", "--detect", url, as_of],
                check=True,
                capture_output=True,
                text=True,
            )
            figures = {"run": label, **json.loads(out.stdout.strip().splitlines()[-1])}
            runs.append(figures)
            console.print(
                f"  {label:18} {figures['seconds']:7.2f}s  at risk {figures['students_at_risk']:>6,}  "
                f"opened {figures['opened']:>6,}  peak RSS {figures['peak_rss_mb']:6.1f} MB",
                highlight=False,
            )
        return {
            "students": students,
            "attendance_rows": summary.attendance,
            "seed_seconds": round(seeded, 1),
            "runs": runs,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.interventions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--students", type=int, nargs="*", default=None, help="sizes (default 100000)")
    parser.add_argument("--quick", action="store_true", help="2,000 students: a smoke run")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--detect", nargs=2, metavar=("URL", "AS_OF"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.detect:
        print(json.dumps(detect_once(*args.detect)))
        return 0
    console = start_run()
    sizes = args.students or ([2_000] if args.quick else [100_000])
    results = [run_size(n, console) for n in sizes]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"rule": "3 days absent in 7", "sizes": results}, indent=2))
    console.print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
