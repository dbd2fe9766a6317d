"""Real-service fixtures' helpers: isolated RabbitMQ vhosts, PostgreSQL databases, Redis prefixes.

A service that does not answer skips the test locally and fails it in CI (``CI=true``), so that a
green CI run always means the integration tests really ran.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

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
def postgres_database() -> Iterator[str]:
    """Create a database for one test and yield its URL; drop it afterwards."""
    require("PostgreSQL", "127.0.0.1", 5432)
    name = unique("edujobs_test")
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
