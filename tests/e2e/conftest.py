"""End-to-end fixtures: a `dramatiq actors` worker on this test's services and a producer client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from brokers.client import Client
from tests.worker import WorkerProcess


@pytest.fixture
def worker_client(edujobs_env: dict[str, str], engine: Engine) -> Iterator[Client]:
    """A producer, once a worker of the real actors runs; ``engine`` (the test module's fixture)
    has written the rows the test needs before the worker starts."""
    worker = WorkerProcess(edujobs_env, threads=2).wait_ready()
    producer = Client(edujobs_env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    yield producer
    producer.close()
    worker.stop()
