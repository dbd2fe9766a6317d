"""The pytest plugin that runs Dramatiq's own tests against edujobs' broker (``pytest -p``).

It provides the fixtures Dramatiq's test files expect, each on a RabbitMQ vhost of its own
(``tests.services.rabbitmq_vhost``):

- ``rabbitmq_broker`` / ``rabbitmq_worker``: an ``EdujobsBroker``, run twice per test: ``full``,
  with the whole middleware stack of ``brokers.stack.build_middleware`` (signatures, validation,
  job state in a migrated SQLite database, pauses, cancellations, breakers, metrics, edujobs'
  retries), and ``bare``, with Dramatiq's default middleware and edujobs' ``Signing`` (which the
  consumer's check on receipt requires), so that a failure tells whether the broker and its
  consumer or the middleware stack is the cause;
- ``stub_broker`` / ``stub_worker``, for the sdist's other files (actors, worker, callbacks,
  composition, results...): the full ``EdujobsBroker`` on RabbitMQ instead of Dramatiq's in-memory
  StubBroker, with the StubBroker's test API (``stub_api``);
- ``RabbitmqBroker(...)`` called by a test itself builds an ``EdujobsBroker`` (``edujobs_broker``).

Then it applies ``tests.conformance.expectations`` to the collected tests: each listed test is
skipped (not applicable here) or marked xfail (a deliberate difference, or an edujobs bug that
stays strict, so that its fix shows as XPASS), and a listed name that matches no test stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
from dramatiq import Worker
from dramatiq.middleware import Middleware, default_middleware
from dramatiq.rate_limits import RateLimiterBackend
from dramatiq.rate_limits.backends import StubBackend as RateLimiterStubBackend
from dramatiq.results import ResultBackend
from dramatiq.results.backends import RedisBackend
from dramatiq.results.backends import StubBackend as ResultStubBackend
from pydantic import SecretStr

from brokers.rabbitmq import EdujobsBroker
from brokers.settings import Settings
from brokers.stack import build_broker
from contracts.priorities import MAX_PRIORITY
from contracts.signing import Keyring
from middleware.signing import Signing
from store.migrate import upgrade
from tests.conformance import expectations
from tests.conformance.stub_api import with_stub_api
from tests.services import RABBITMQ_HOST, rabbitmq_vhost, require, unique

SIGNING_KEY = "conformance-signing-key"
KEYRING = Keyring(SIGNING_KEY.encode())
#: What ``RabbitmqBroker()`` connects to in a test that builds its broker itself (no vhost fixture):
#: such tests only connect, they declare nothing.
DEFAULT_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:5672/%2F"
WORKER_NAME = "conformance"


def bare_middleware() -> list[Middleware]:
    """Dramatiq's default middleware, and edujobs' ``Signing`` last: ``EdujobsBroker``'s consumer
    verifies every message it receives, so nothing unsigned would ever run."""
    return [*(m() for m in default_middleware), Signing(keyring=KEYRING)]


def edujobs_broker(**kwargs: Any) -> EdujobsBroker:
    """What ``RabbitmqBroker(**kwargs)`` becomes in Dramatiq's tests: an ``EdujobsBroker`` with the
    arguments it requires (and Dramatiq's does not) filled in, and the bare stack."""
    kwargs.setdefault("url", DEFAULT_URL)
    kwargs.setdefault("max_priority", MAX_PRIORITY)
    kwargs.setdefault("dead_letter_ttl_ms", Settings().dead_letter_ttl_ms)
    kwargs.setdefault("worker_name", WORKER_NAME)
    kwargs.setdefault("keyring", KEYRING)
    kwargs.setdefault("middleware", bare_middleware())
    return EdujobsBroker(**kwargs)


@pytest.fixture
def rabbitmq_reachable() -> None:
    require("RabbitMQ", RABBITMQ_HOST, 5672)


@pytest.fixture(scope="session")
def conformance_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database for the full stack's job state, pauses and cancellations."""
    url = f"sqlite:///{tmp_path_factory.mktemp('conformance') / 'edujobs.db'}"
    upgrade(url)
    return url


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    with rabbitmq_vhost() as url:
        yield url


def _settings(url: str, database_url: str, metrics_dir: Path) -> Settings:
    return Settings(
        rabbitmq_url=url,
        database_url=database_url,
        signing_key=SecretStr(SIGNING_KEY),
        worker_name=WORKER_NAME,
        metrics_dir=str(metrics_dir),
        redis_url=None,
        sentry_dsn=None,
    )


def _installed(broker: EdujobsBroker) -> Iterator[EdujobsBroker]:
    # As Dramatiq's own fixtures do: the process has booted, the broker is the global one.
    previous = dramatiq.broker.global_broker
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    try:
        yield broker
    finally:
        broker.close()
        dramatiq.broker.global_broker = previous


def _full_broker(url: str, database_url: str, tmp_path: Path) -> EdujobsBroker:
    return build_broker(_settings(url, database_url, tmp_path / "metrics"))


@pytest.fixture(params=["full", "bare"])
def rabbitmq_broker(
    request: pytest.FixtureRequest, rabbitmq_url: str, conformance_database: str, tmp_path: Path
) -> Iterator[EdujobsBroker]:
    if request.param == "full":
        broker = _full_broker(rabbitmq_url, conformance_database, tmp_path)
    else:
        broker = edujobs_broker(url=rabbitmq_url)
    yield from _installed(broker)


@pytest.fixture
def rabbitmq_worker(rabbitmq_broker: EdujobsBroker) -> Iterator[Worker]:
    worker = Worker(rabbitmq_broker, worker_threads=8)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def stub_broker(rabbitmq_url: str, conformance_database: str, tmp_path: Path) -> Iterator[EdujobsBroker]:
    yield from _installed(with_stub_api(_full_broker(rabbitmq_url, conformance_database, tmp_path)))


@pytest.fixture
def stub_worker(stub_broker: EdujobsBroker) -> Iterator[Worker]:
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=8)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def result_backend() -> ResultBackend:
    # Results are stored apart from the broker; the in-memory backend is enough to read them.
    return ResultStubBackend()


@pytest.fixture
def redis_result_backend() -> ResultBackend:
    require("Redis", "127.0.0.1", 6379)
    backend: ResultBackend = RedisBackend(
        namespace=unique("edujobs-conformance-results"), url="redis://127.0.0.1:6379/0"
    )
    return backend


@pytest.fixture
def rate_limiter_backend() -> RateLimiterBackend:
    return RateLimiterStubBackend()  # type: ignore[no-untyped-call]


@pytest.fixture(autouse=True)
def _edujobs_broker_class(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test module that builds ``RabbitmqBroker(...)`` itself gets an ``EdujobsBroker``."""
    module = getattr(request, "module", None)
    if module is not None and hasattr(module, "RabbitmqBroker"):
        monkeypatch.setattr(module, "RabbitmqBroker", edujobs_broker)


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("pika").setLevel(logging.WARNING)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expectations.apply(items)
