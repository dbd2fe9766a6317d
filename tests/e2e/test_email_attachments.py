"""End to end: an email carries a report from storage as an attachment; a missing file is a
permanent error naming it, dead-lettered after one attempt."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import User
from store.storage import LocalStorage
from tests.amqp import take
from tests.fakes.sendgrid import FakeSendGrid

REPORT = b"%PDF-1.4 a small report\n%%EOF\n"


@pytest.fixture
def engine(edujobs_env: dict[str, str], tmp_path: Path) -> Iterator[Engine]:
    edujobs_env["EDUJOBS_STORAGE_URL"] = f"file:{tmp_path / 'storage'}"
    LocalStorage(tmp_path / "storage").put_bytes("reports/7/q1.pdf", REPORT)
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
        "storage_key": "reports/7/q1.pdf",
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
    attachment = {"storage_key": "reports/8/none.pdf", "filename": "none.pdf"}
    worker_client.send(
        "notifications.send_email", {"user_id": 1, "template": "welcome", "attachments": [attachment]}
    )
    [dead] = take(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ", 1)
    assert dead.headers["x-edujobs-exception"] == "ObjectNotFoundError"
    assert "reports/8/none.pdf" in dead.headers["x-edujobs-error"]
    assert fake_sendgrid.requests == []
