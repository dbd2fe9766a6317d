"""Real-service fixtures' helpers: isolated RabbitMQ vhosts, PostgreSQL databases, Redis prefixes.

A service that does not answer skips the test locally and fails it in CI (``CI=true``), so that a
green CI run always means the integration tests really ran.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import queue
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from store.migrate import upgrade
from tests.fakes import fcm, twilio
from tests.fakes.fcm import FakeFcm
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio

RABBITMQ_HOST = os.environ.get("EDUJOBS_TEST_RABBITMQ_HOST", "127.0.0.1")
MANAGEMENT_URL = os.environ.get("EDUJOBS_TEST_RABBITMQ_MANAGEMENT", "http://127.0.0.1:15672")
POSTGRES_ADMIN_URL = os.environ.get(
    "EDUJOBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AUTH = ("guest", "guest")


def require(service: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        message = f"{service} is not reachable at {host}:{port}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have every service up: see .ci/run)")
        pytest.skip(message)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """Create a vhost for one test and yield its AMQP URL; delete it (and its queues) afterwards."""
    require("RabbitMQ", RABBITMQ_HOST, 5672)
    require("RabbitMQ management", RABBITMQ_HOST, 15672)
    vhost = unique("edujobs-test")
    quoted = urllib.parse.quote(vhost, safe="")
    with httpx.Client(base_url=MANAGEMENT_URL, auth=AUTH, timeout=10) as http:
        http.put(f"/api/vhosts/{quoted}").raise_for_status()
        http.put(
            f"/api/permissions/{quoted}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
        ).raise_for_status()
        try:
            yield f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{quoted}"
        finally:
            http.delete(f"/api/vhosts/{quoted}")


def management_get(path: str) -> Any:
    with httpx.Client(base_url=MANAGEMENT_URL, auth=AUTH, timeout=10) as http:
        response = http.get(path)
        response.raise_for_status()
        return response.json()


@contextmanager
def postgres_database(*, migrated: bool = False) -> Iterator[str]:
    """Create a database for one test and yield its URL; drop it afterwards. ``migrated``: at the
    latest revision, a copy of a database this process migrated once (0.1 s instead of 0.5 to 1 s
    for running the migrations again)."""
    require("PostgreSQL", "127.0.0.1", 5432)
    name = unique("edujobs_test")
    template = f' TEMPLATE "{_migrated_template()}"' if migrated else ""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{template}'))
    admin.dispose()
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _dropper.drop(name)


@functools.cache
def _migrated_template() -> str:
    """A database migrated to the latest revision, that ``postgres_database(migrated=True)`` copies;
    dropped when the process exits."""
    name = unique("edujobs_template")
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    upgrade(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)

    def drop() -> None:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    atexit.register(drop)
    return name


class _Dropper:
    """Drops the tests' databases on a thread of its own: a DROP DATABASE takes 0.5 s or more on
    this machine, which the test that made the database need not wait for. Every database handed
    over is dropped before the test process exits."""

    def __init__(self) -> None:
        self._names: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def drop(self, name: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="drop-test-databases", daemon=True)
                self._thread.start()
                atexit.register(self.finish)
        self._names.put(name)

    def finish(self) -> None:
        """Wait until every database handed over is dropped."""
        self._names.put(None)
        if self._thread is not None:
            self._thread.join(120)

    def _run(self) -> None:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            while (name := self._names.get()) is not None:
                try:
                    with admin.connect() as connection:
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                except Exception:  # a database left behind must not stop the others
                    logging.getLogger(__name__).warning(
                        "Could not drop test database %s", name, exc_info=True
                    )
        finally:
            admin.dispose()


_dropper = _Dropper()


def services_environment(
    amqp_url: str,
    database_url: str,
    fake_sendgrid: FakeSendGrid,
    fake_twilio: FakeTwilio | None = None,
    fake_fcm: FakeFcm | None = None,
) -> dict[str, str]:
    """The edujobs settings (environment variables) that wire a worker or a producer to these
    services and fake providers (Twilio's and FCM's only when their fakes are given)."""
    env = {
        "EDUJOBS_ENVIRONMENT": "test",
        "EDUJOBS_RABBITMQ_URL": amqp_url,
        "EDUJOBS_DATABASE_URL": database_url,
        "EDUJOBS_SENDGRID_HOST": fake_sendgrid.url,
        "EDUJOBS_SENDGRID_API_KEY": "SG.test-key",
        "EDUJOBS_SENDGRID_TIMEOUT": "5",
        "EDUJOBS_EMAIL_FROM": "school@example.edu",
        "EDUJOBS_SIGNING_KEY": "test-signing-key",
        "EDUJOBS_METRICS_PORT": "0",
    }
    if fake_twilio is not None:
        env |= _twilio_environment(fake_twilio)
    if fake_fcm is not None:
        env |= {
            "EDUJOBS_FCM_PROJECT_ID": fcm.PROJECT_ID,
            "EDUJOBS_FCM_BASE_URL": fake_fcm.url,
            "EDUJOBS_FCM_TIMEOUT": "5",
        }
    return env


def _twilio_environment(fake_twilio: FakeTwilio) -> dict[str, str]:
    return {
        "EDUJOBS_TWILIO_BASE_URL": fake_twilio.url,
        "EDUJOBS_TWILIO_ACCOUNT_SID": twilio.ACCOUNT_SID,
        "EDUJOBS_TWILIO_AUTH_TOKEN": twilio.AUTH_TOKEN,
        "EDUJOBS_TWILIO_FROM_NUMBER": twilio.FROM_NUMBER,
        "EDUJOBS_TWILIO_TIMEOUT": "5",
        "EDUJOBS_TWILIO_STATUS_CALLBACK_URL": "https://school.example.edu/hooks/twilio",
    }
