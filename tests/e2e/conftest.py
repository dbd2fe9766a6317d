"""End-to-end fixtures: a `dramatiq actors` worker on this test's services and a producer client.

A module whose tests can share one worker (each test resets the queues and the record it reads)
uses ``module_worker`` and ``reset_queues``: a worker costs some 5 s to start and stop.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pytest
import redis
from sqlalchemy import Engine

from brokers.client import Client
from store.migrate import upgrade
from tests.services import postgres_database, rabbitmq_vhost
from tests.worker import WorkerProcess


@pytest.fixture
def redis_key() -> Iterator[str]:
    """A Redis list of the test's own, where the test actors (``tests.e2e.actors_testing``) record."""
    key = f"edujobs-test:{uuid.uuid4().hex}"
    yield key
    redis.Redis().delete(key)


@contextmanager
def module_worker(**extra_env: str) -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    """A worker of the test actors on a vhost, database and Redis record of its own, for the tests
    of a module: yields its environment (``EDUJOBS_TEST_KEY`` is the record) and the process."""
    key = f"edujobs-test:{uuid.uuid4().hex}"
    with rabbitmq_vhost() as url, postgres_database() as database:
        upgrade(database)
        env = {
            "EDUJOBS_ENVIRONMENT": "test",
            "EDUJOBS_RABBITMQ_URL": url,
            "EDUJOBS_DATABASE_URL": database,
            "EDUJOBS_SIGNING_KEY": "test-signing-key",
            "EDUJOBS_METRICS_PORT": "0",
            "EDUJOBS_TEST_KEY": key,
            **extra_env,
        }
        process = WorkerProcess(env, threads=2, module="tests.e2e.actors_testing").wait_ready()
        try:
            yield env, process
        finally:
            process.stop()
            redis.Redis().delete(key)


def reset_queues(url: str, *domains: str) -> None:
    """Empty the domains' queues and companions, and check that the shared worker still runs."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for domain in domains:
            for suffix in ("", ".DQ", ".XQ", ".park"):
                channel.queue_purge(domain + suffix)
    finally:
        connection.close()


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
