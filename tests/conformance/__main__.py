"""``python -m tests.conformance [pytest arguments]``: stage Dramatiq's tests and run them.

Run from the repository root (``make test-conformance`` does), so that ``tests`` and the edujobs
packages import from this work tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance import sdist

#: Dramatiq's test files that run against edujobs' RabbitMQ broker (README, "Differences from plain
#: Dramatiq", says why the others are left out).
FILES = (
    "test_rabbitmq.py",
    "test_actors.py",
    "test_worker.py",
    "test_callbacks.py",
    "test_composition.py",
    "test_encoders.py",
    "test_messages.py",
    "test_generic_actors.py",
    "test_broker.py",
    "test_results.py",
)


def main(argv: list[str]) -> int:
    try:
        package = sdist.prepare(FILES)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"Cannot stage Dramatiq's tests: {e}", file=sys.stderr)
        return 1
    ours = Path(__file__).with_name("dramatiq_behaviour.py")
    return int(
        pytest.main(["-p", "tests.conformance.plugin", "--timeout", "120", *argv, str(package), str(ours)])
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
