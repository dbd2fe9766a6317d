"""The benchmarks still run: `python -m bench --quick` finishes and writes every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require
from tests.worker import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmarks_run_and_write_their_figures(tmp_path: Path) -> None:
    require("RabbitMQ", "127.0.0.1", 5672)
    output = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures, "no figures written"
    assert "ratio" in json.dumps(figures)


def test_the_quick_notification_benchmark_runs_and_writes_its_figures(tmp_path: Path) -> None:
    require("RabbitMQ", "127.0.0.1", 5672)
    output = tmp_path / "notifications.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.notifications", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["bulk"]["requests"] == 2 and figures["bulk"]["recipients"] == 2000
    assert figures["throughput"]["median"] > 0
