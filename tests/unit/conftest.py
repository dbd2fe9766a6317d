"""Unit-test fixtures: the process's StubBroker (``tests.stub``, set by the root conftest) and a worker."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from tests.stub import broker as _broker


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    _broker.flush_all()
    yield _broker
    _broker.flush_all()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()
