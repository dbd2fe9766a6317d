"""End to end: an email carries a file from storage's ``attachments/`` as an attachment; a missing
file is a permanent error naming it, dead-lettered after one attempt; anything outside
``attachments/`` (a database backup, a report, media) is never read, whichever way the message came
in: refused by the HTTP API to a token that may enqueue notifications, dead-lettered with the reason
when published straight to RabbitMQ."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from brokers.client import Client
from ops.api import create_app
from store import tokens
from store.db import make_engine
from store.models import User
from store.storage import LocalStorage
from tests.amqp import depth, dramatiq_message, publish, take
from tests.fakes.sendgrid import FakeSendGrid

REPORT = b"%PDF-1.4 a small report\n%%EOF\n"
BACKUP = b"SQLite format 3\x00 token hashes and personal data"
KEY = b"test-signing-key"


@pytest.fixture(scope="module")
def storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def shared_worker_env(storage_root: Path) -> dict[str, str]:
    return {"EDUJOBS_STORAGE_URL": f"file:{storage_root}"}


@pytest.fixture
def edujobs_env(shared_env: dict[str, str]) -> dict[str, str]:
    """One worker for the module's tests; each starts on empty queues, database and fakes."""
    return shared_env


@pytest.fixture
def engine(edujobs_env: dict[str, str], storage_root: Path) -> Iterator[Engine]:
    # The files the tests ask for, written again for each test
    storage = LocalStorage(storage_root)
    storage.put_bytes("attachments/7/q1.pdf", REPORT)
    storage.put_bytes("backups/2026-12-01/edujobs.sqlite3", BACKUP)
    storage.put_bytes("reports/course-performance/2026-12-01/q1.pdf", REPORT)
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(User(id=1, email="ada@example.edu", name="Ada Lovelace", role="instructor"))
        session.commit()
    yield engine
    engine.dispose()


def test_an_attachment_from_storage_reaches_sendgrid(
    worker_client: Client, fake_sendgrid: FakeSendGrid
) -> None:
    context = {"report_name": "Q1", "report_format": "pdf", "download_url": "https://x.test/r/7"}
    attachment = {
        "storage_key": "attachments/7/q1.pdf",
        "filename": "Q1 report.pdf",
        "mime_type": "application/pdf",
    }
    worker_client.send(
        "notifications.send_email",
        {"user_id": 1, "template": "report_ready", "context": context, "attachments": [attachment]},
    )
    [request] = fake_sendgrid.wait_for(1)
    [sent] = request.json()["attachments"]
    assert sent["filename"] == "Q1 report.pdf" and sent["type"] == "application/pdf"
    assert base64.b64decode(sent["content"]) == REPORT


def test_a_missing_attachment_is_dead_lettered_with_its_key(
    worker_client: Client, fake_sendgrid: FakeSendGrid, edujobs_env: dict[str, str]
) -> None:
    attachment = {"storage_key": "attachments/8/none.pdf", "filename": "none.pdf"}
    worker_client.send(
        "notifications.send_email", {"user_id": 1, "template": "welcome", "attachments": [attachment]}
    )
    [dead] = take(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ", 1)
    assert dead.headers["x-edujobs-exception"] == "ObjectNotFoundError"
    assert "attachments/8/none.pdf" in dead.headers["x-edujobs-error"]
    assert fake_sendgrid.requests == []


@pytest.mark.parametrize(
    "storage_key",
    [
        "backups/2026-12-01/edujobs.sqlite3",
        "reports/course-performance/2026-12-01/q1.pdf",
        "attachments/../backups/2026-12-01/edujobs.sqlite3",
    ],
)
def test_a_notifications_token_cannot_mail_a_backup_or_a_report(
    worker_client: Client,
    fake_sendgrid: FakeSendGrid,
    edujobs_env: dict[str, str],
    engine: Engine,
    storage_key: str,
) -> None:
    # Given a worker, and a service whose token may only enqueue notifications
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    token = tokens.create(engine, name="lms", scopes=["enqueue:notifications"], created_by="test")
    headers = {"Authorization": f"Bearer {token}"}
    attachment = {"storage_key": storage_key, "filename": "x"}
    email = {"user_id": 1, "template": "welcome", "attachments": [attachment]}
    # When it asks the HTTP API to attach a file from outside attachments/
    with TestClient(create_app(rabbitmq_url=url, engine=engine, client=worker_client)) as api:
        refused = api.post(
            "/v1/messages", json={"actor": "notifications.send_email", "payload": email}, headers=headers
        )
    # Then the request is refused, saying where attachments come from, and nothing is published
    assert refused.status_code == 422
    assert "not attachable: attachments come from attachments/ only" in refused.text
    assert depth(url, "notifications") == 0
    # When the same email is published straight to RabbitMQ, signed (the worker's own checks)
    message = dramatiq_message("notifications.send_email", "notifications", email, key=KEY)
    publish(url, "notifications", message)
    # Then it is dead-lettered at once with the reason, and the file never left storage
    [dead] = take(url, "notifications.XQ", 1)
    assert dead.message()["message_id"] == message["message_id"]
    assert dead.headers["x-edujobs-exception"] == "ContractError"
    assert "not attachable" in dead.headers["x-edujobs-error"]
    assert fake_sendgrid.requests == []
    assert BACKUP not in json.dumps(dead.message()).encode()
