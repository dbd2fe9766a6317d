"""Benchmark results as rich tables (for the terminal) and as JSON (for ``var/bench/results.json``).

Nothing here prints: ``bench.__main__`` does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import ComparisonResult, Scale


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}"


def comparison_table(result: ComparisonResult) -> Table:
    """One table per comparison: each contender's median rate and CPU cost, then the ratios."""
    table = Table(
        title=result.title, title_justify="left", caption="; ".join(result.notes), caption_justify="left"
    )
    table.add_column("contender")
    table.add_column(f"median {result.unit}", justify="right")
    table.add_column("per round", justify="right")
    table.add_column("CPU us/msg", justify="right")
    table.add_column("messages", justify="right")
    for contender in result.contenders:
        cpu = contender.median_cpu_us_per_message
        table.add_row(
            contender.label,
            _rate(contender.median_rate),
            " / ".join(_rate(rate) for rate in contender.rates),
            "" if cpu is None else f"{cpu:,.0f}",
            f"{contender.count:,}",
        )
    table.add_section()
    for ratio in result.ratios:
        if ratio.target is None:
            verdict = "(reference)"
        else:
            verdict = f"target >= {ratio.target:g}: " + ("met" if ratio.meets_target else "NOT met")
        table.add_row(
            f"ratio {ratio.label}",
            _ratio(ratio.median),
            " / ".join(_ratio(value) for value in ratio.per_round),
            verdict,
        )
    return table


def machine() -> dict[str, Any]:
    """What the figures depend on: the machine, its load, and the library versions."""
    return {
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "dramatiq": version("dramatiq"),
        "pika": version("pika"),
    }


def results_document(
    results: Sequence[ComparisonResult], *, scale: Scale, started: float, machine_before: dict[str, Any]
) -> dict[str, Any]:
    comparisons = {}
    for result in results:
        data = dataclasses.asdict(result)
        for ratio, figures in zip(data["ratios"], result.ratios, strict=True):
            ratio["meets_target"] = figures.meets_target
        comparisons[result.name] = data
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "quick": scale.quick,
        "rounds": scale.rounds,
        "machine_before": machine_before,
        "machine_after": machine(),
        "comparisons": comparisons,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


def start_run() -> Console:
    """Set up a benchmark entry point: progress (one line per measurement) goes to stderr and
    libraries only say when something is wrong; the console is wide enough to read when the output
    goes to a file or a CI log."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("bench").setLevel(logging.INFO)
    return Console(width=None if sys.stdout.isatty() else 150)
