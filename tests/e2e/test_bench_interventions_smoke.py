"""The intervention detection benchmark still runs: ``python -m bench.interventions --quick`` seeds
2,000 students (attendance only), runs the nightly detection twice and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require
from tests.worker import ROOT

pytestmark = pytest.mark.slow


def test_the_quick_intervention_benchmark_runs_and_writes_its_figures(tmp_path: Path) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    output = tmp_path / "interventions.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.interventions", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [size] = json.loads(output.read_text())["sizes"]
    assert size["students"] == 2_000 and size["attendance_rows"] == 2_000 * 3 * 30
    first, rerun = size["runs"]
    assert first["opened"] == first["students_at_risk"] > 0 and first["notifications"] == first["opened"]
    assert rerun["opened"] == 0 and rerun["already_open"] == first["opened"]
