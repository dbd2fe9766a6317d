"""End-to-end fixtures: a `dramatiq actors` worker on this test's services and a producer client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from brokers.client import Client
from tests.worker import WorkerProcess


@pytest.fixture
def redis_key() -> Iterator[str]:
    """A Redis list of the test's own, where the test actors (``tests.e2e.actors_testing``) record."""
    key = f"edujobs-test:{uuid.uuid4().hex}"
    yield key
    redis.Redis().delete(key)


def recorded(key: str) -> list[str]:
    """What the test actors recorded in ``key``, in order."""
    return [v.decode() for v in redis.Redis().lrange(key, 0, -1)]


@pytest.fixture
def worker_client(edujobs_env: dict[str, str], engine: Engine) -> Iterator[Client]:
    """A producer, once a worker of the real actors runs; ``engine`` (the test module's fixture)
    has written the rows the test needs before the worker starts."""
    worker = WorkerProcess(edujobs_env, threads=2).wait_ready()
    producer = Client(edujobs_env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    yield producer
    producer.close()
    worker.stop()
