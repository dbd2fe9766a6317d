"""Producers import ``brokers.client`` without dramatiq, the actors or their heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_client_loads_neither_dramatiq_nor_any_actor() -> None:
    # Given a fresh interpreter, as in another service
    code = (
        "import brokers.client, json, sys; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dramatiq', 'actors'))))"
    )
    # When it imports the producer client
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    # Then no module of dramatiq or of the actors was loaded
    assert json.loads(result.stdout) == []
