"""End-to-end fixtures: a `dramatiq actors` worker on this test's services and a producer client.

A module whose tests can share one worker (each test resets the queues and the record it reads)
uses ``module_worker`` and ``reset_queues``: a worker costs some 5 s to start and stop.

A module of the real actors whose tests read the ledger, the fake providers and the queues shares
one worker of them through ``shared_services``: its ``edujobs_env``, fake providers and
``worker_client`` are the module's (see ``SharedServices``), and each test starts on empty queues,
an empty database (migrated), fake providers with nothing recorded or queued, and closed breakers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TypeVar, cast

import pika
import pytest
import redis
from sqlalchemy import Engine, func, inspect, select, text

from brokers.client import Client
from brokers.topology import DOMAIN_QUEUES
from store.db import make_engine
from store.migrate import upgrade
from store.models import JobRecord
from tests.fakes.fcm import FakeFcm
from tests.fakes.http import FakeServer
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio
from tests.services import postgres_database, rabbitmq_vhost, services_environment
from tests.worker import WorkerProcess, wait_until


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
    with rabbitmq_vhost() as url, postgres_database(migrated=True) as database:
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
def worker_client(
    request: pytest.FixtureRequest, edujobs_env: dict[str, str], engine: Engine
) -> Iterator[Client]:
    """A producer, once a worker of the real actors runs; ``engine`` (the test module's fixture)
    has written the rows the test needs before the worker starts. In a module that shares a worker
    (its ``edujobs_env`` is ``shared_env``), the module's worker and producer."""
    if SHARED in request.fixturenames:
        yield request.getfixturevalue(SHARED).client
        return
    worker = WorkerProcess(edujobs_env, threads=2).wait_ready()
    producer = Client(edujobs_env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    yield producer
    producer.close()
    worker.stop()


FakeServerT = TypeVar("FakeServerT", bound=FakeServer)
RESTART_SEQUENCES = (
    "SELECT setval(quote_ident(schemaname) || '.' || quote_ident(sequencename), 1, false)"
    " FROM pg_sequences WHERE schemaname = current_schema()"
)


@dataclass
class SharedServices:
    """One worker of the real actors for the tests of a module, on a vhost, a database and fake
    providers of the module's; ``reset`` (run before each test) makes them as new."""

    env: dict[str, str]
    sendgrid: FakeSendGrid
    twilio: FakeTwilio
    fcm: FakeFcm
    worker: WorkerProcess
    client: Client
    engine: Engine

    def reset(self) -> None:
        """Wait until the worker is idle (the last test's messages done, their job states written),
        then empty the queues, the database (every table but Alembic's) and the fakes' records, and
        close the breakers the worker shares through Redis (``EDUJOBS_BREAKER_NAMESPACE``)."""
        url = self.env["EDUJOBS_RABBITMQ_URL"]
        queues = [q + suffix for q in DOMAIN_QUEUES for suffix in ("", ".DQ")]
        wait_until(lambda: self._ready(url, queues) == 0, what="the shared worker's queues drained")
        wait_until(self._idle_twice, what="the shared worker idle")
        if self.worker.process.poll() is not None:
            raise AssertionError(f"the shared worker exited:\n{self.worker.output()[-5000:]}")
        reset_queues(url, *DOMAIN_QUEUES)
        with self.engine.begin() as connection:
            # DELETE (foreign keys unchecked) takes some 0.05 s here, TRUNCATE of these 28 tables 1 s
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text("SET LOCAL lock_timeout = '20s'"))
            for table in inspect(connection).get_table_names():
                if table != "alembic_version":
                    connection.execute(text(f'DELETE FROM "{table}"'))
            connection.execute(text(RESTART_SEQUENCES))
        for fake in (self.sendgrid, self.twilio, self.fcm):
            fake.reset()
        namespace = self.env.get("EDUJOBS_BREAKER_NAMESPACE")
        if namespace:
            client = redis.Redis.from_url(self.env.get("EDUJOBS_REDIS_URL", "redis://127.0.0.1:6379/0"))
            for key in client.scan_iter(match=f"*{namespace}*"):
                client.delete(key)

    @staticmethod
    def _ready(url: str, queues: list[str]) -> int:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            return sum(int(channel.queue_declare(q, passive=True).method.message_count) for q in queues)
        finally:
            connection.close()

    def _running(self) -> int:
        with self.engine.connect() as connection:
            running = select(func.count()).where(JobRecord.state == "running")
            return int(connection.execute(running).scalar_one())

    def _idle_twice(self) -> bool:
        # Job states are written in batches (every 0.2 s): no job running, twice, 0.3 s apart.
        if self._running():
            return False
        time.sleep(0.3)
        return self._running() == 0


@pytest.fixture(scope="module")
def shared_worker_env() -> dict[str, str]:
    """What a module adds to its shared worker's environment (override it in the module)."""
    return {}


@pytest.fixture(scope="module")
def shared_services(shared_worker_env: dict[str, str]) -> Iterator[SharedServices]:
    with ExitStack() as stack:
        url = stack.enter_context(rabbitmq_vhost())
        database = stack.enter_context(postgres_database(migrated=True))
        upgrade(database)
        fakes = FakeSendGrid().start(), FakeTwilio().start(), FakeFcm().start()
        for fake in fakes:
            stack.callback(fake.stop)
        env = {**services_environment(url, database, *fakes), **shared_worker_env}
        worker = WorkerProcess(env, threads=2).wait_ready()
        stack.callback(worker.stop)
        client = Client(url, signing_key=b"test-signing-key")
        stack.callback(client.close)
        engine = make_engine(database)
        stack.callback(engine.dispose)
        yield SharedServices(env, *fakes, worker, client, engine)


@pytest.fixture
def shared_env(shared_services: SharedServices, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The shared services made as new for this test; their environment, set for this process too.
    A module that shares a worker returns it from its ``edujobs_env``."""
    shared_services.reset()
    for key, value in shared_services.env.items():
        monkeypatch.setenv(key, value)
    return dict(shared_services.env)


#: The fixture whose presence in a test's closure means that its module shares a worker.
SHARED = "shared_services"


def _fake(request: pytest.FixtureRequest, kind: Callable[[], FakeServerT]) -> Iterator[FakeServerT]:
    """A fake provider of ``kind`` started for one test; or, in a module that shares a worker, the
    module's one (made as new by ``shared_env``)."""
    if SHARED in request.fixturenames:
        request.getfixturevalue("edujobs_env")  # the reset comes before the test uses the fake
        shared: SharedServices = request.getfixturevalue(SHARED)
        [found] = [f for f in (shared.sendgrid, shared.twilio, shared.fcm) if type(f) is kind]
        yield cast(FakeServerT, found)
        return
    server = kind().start()
    yield server
    server.stop()


@pytest.fixture
def fake_sendgrid(request: pytest.FixtureRequest) -> Iterator[FakeSendGrid]:
    yield from _fake(request, FakeSendGrid)


@pytest.fixture
def fake_twilio(request: pytest.FixtureRequest) -> Iterator[FakeTwilio]:
    yield from _fake(request, FakeTwilio)


@pytest.fixture
def fake_fcm(request: pytest.FixtureRequest) -> Iterator[FakeFcm]:
    yield from _fake(request, FakeFcm)
