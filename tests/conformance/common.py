"""The helpers Dramatiq's test files import from their ``.common`` module, which the sdist leaves out.

They are written here from the names those files import (``worker``, the ``skip_*`` marks, the
RabbitMQ credentials); the staged package's ``common.py`` re-exports this module. A RabbitMQ that
does not answer skips a test locally and fails it in CI, as everywhere in edujobs' tests.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
from dramatiq import Broker, Worker

__all__ = [
    "RABBITMQ_CREDENTIALS",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_USERNAME",
    "skip_in_ci",
    "skip_on_pypy",
    "skip_on_windows",
    "skip_unless_rabbit_mq",
    "worker",
]

RABBITMQ_USERNAME = "guest"
RABBITMQ_PASSWORD = "guest"
RABBITMQ_CREDENTIALS = pika.PlainCredentials(RABBITMQ_USERNAME, RABBITMQ_PASSWORD)

# Dramatiq skips these timing-sensitive tests on its CI (GitHub Actions); ours runs them.
skip_in_ci = pytest.mark.skipif(os.getenv("GITHUB_ACTION") is not None, reason="skipped on Dramatiq's CI")
skip_on_windows = pytest.mark.skipif(platform.system() == "Windows", reason="not on Windows")
skip_on_pypy = pytest.mark.skipif(
    platform.python_implementation() == "PyPy", reason="time limits need CPython"
)
#: The plugin's ``rabbitmq_reachable`` fixture skips (or, in CI, fails) when RabbitMQ does not answer.
skip_unless_rabbit_mq = pytest.mark.usefixtures("rabbitmq_reachable")


@contextmanager
def worker(broker: Broker, **kwargs: Any) -> Iterator[Worker]:
    """A started Dramatiq worker for the ``with`` block, stopped on the way out."""
    started = Worker(broker, **kwargs)
    started.start()
    try:
        yield started
    finally:
        started.stop()
