"""The event benchmark still runs: `python -m bench.events --quick` finishes and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require
from tests.worker import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("work", ["incr", "db"])
def test_the_quick_event_benchmark_runs_and_writes_its_figures(tmp_path: Path, work: str) -> None:
    require("RabbitMQ", "127.0.0.1", 5672)
    output = tmp_path / "events.json"
    command = [sys.executable, "-m", "bench.events", "--count", "500", "--rounds", "1", "--work", work]
    result = subprocess.run(
        [*command, "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["count"] == 500 and figures["work"] == work
    assert set(figures["throughput"]["rates"]) == {"events", "messages"}
    assert figures["throughput"]["median"] > 0
