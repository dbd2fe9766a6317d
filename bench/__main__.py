"""``python -m bench [NAME ...] [--quick] [--rounds N] [--output PATH]``: run the comparisons
side by side, print a table per comparison and write every figure to ``var/bench/results.json``.

Exits 0 whatever the figures are (they are reported, never asserted); 1 if a benchmark could
not run (RabbitMQ or Redis down, a worker that died).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.comparisons import COMPARISONS, get_comparison
from bench.harness import BenchError, ComparisonResult, Scale, check_services
from bench.report import comparison_table, machine, results_document, start_run, write_json

DEFAULT_OUTPUT = Path("var/bench/results.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Side-by-side benchmarks of edujobs against plain Dramatiq and pika.",
    )
    names = [c.name for c in COMPARISONS]
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="comparisons to run (default: all): " + ", ".join(names)
    )
    parser.add_argument("--quick", action="store_true", help="smaller N and one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 3, or 1 with --quick)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})"
    )
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in names:
            parser.error(f"unknown comparison {name!r} (choose from {', '.join(names)})")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = start_run()
    scale = Scale(quick=args.quick, rounds=args.rounds or (1 if args.quick else 3))
    started, before = time.time(), machine()
    results: list[ComparisonResult] = []
    try:
        check_services()
        for name in args.names or [c.name for c in COMPARISONS]:
            comparison = get_comparison(name)
            console.print(f"[bold]{comparison.title}[/bold]: {scale.rounds} round(s)...")
            result = comparison.run(scale)
            results.append(result)
            console.print(comparison_table(result))
    except (BenchError, OSError, AssertionError) as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        return 1
    finally:
        if results:
            write_json(
                args.output, results_document(results, scale=scale, started=started, machine_before=before)
            )
    console.print(f"Figures written to {args.output} ({time.time() - started:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
