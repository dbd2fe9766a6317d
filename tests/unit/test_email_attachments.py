"""Attachments are read from storage's ``attachments/`` only: the contract refuses any other key
when a message is sent, and the worker refuses it again before reading anything (a message that
skipped the contract, or an actor called directly, still cannot mail a backup)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.notifications.attachments import load_attachments
from actors.notifications.errors import AttachmentNotAllowedError
from contracts import get_contract
from contracts.errors import ContractError, PermanentError
from store.storage import LocalStorage, get_storage

BACKUP = b"SQLite format 3\x00 token hashes"
OUTSIDE = [
    "backups/2026-12-01/edujobs.sqlite3",
    "reports/course-performance/2026-12-01/q1.pdf",
    "media/7/video/720p.mp4",
    "archives/audit_logs/2025.jsonl.gz",
    "attachments/../backups/2026-12-01/edujobs.sqlite3",
    "attachments/./../backups/2026-12-01/edujobs.sqlite3",
    "attachments//etc/passwd",
    "attachments\\..\\backups\\edujobs.sqlite3",
    "/attachments/a.pdf",
    "Attachments/a.pdf",
]


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStorage]:
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path}")
    get_storage.cache_clear()
    storage = LocalStorage(tmp_path)
    storage.put_bytes("backups/2026-12-01/edujobs.sqlite3", BACKUP)
    storage.put_bytes("attachments/7/q1.pdf", b"%PDF-1.4")
    yield storage
    get_storage.cache_clear()


@pytest.mark.parametrize("key", OUTSIDE)
def test_the_contract_refuses_a_key_outside_attachments(key: str) -> None:
    # When a producer names a file outside attachments/
    email = {"user_id": 1, "template": "welcome", "attachments": [{"storage_key": key, "filename": "a"}]}
    # Then the message is refused before it is published, saying where attachments come from
    with pytest.raises(ContractError, match="not attachable: attachments come from attachments/ only"):
        get_contract("notifications.send_email").validate(email)


@pytest.mark.parametrize("key", OUTSIDE)
def test_the_worker_refuses_a_key_outside_attachments_before_reading(storage: LocalStorage, key: str) -> None:
    # Given an attachable file first and a forbidden one second
    items = [
        {"storage_key": "attachments/7/q1.pdf", "filename": "q1.pdf"},
        {"storage_key": key, "filename": "x"},
    ]
    # When the worker loads them
    with pytest.raises(AttachmentNotAllowedError, match="not attachable") as error:
        load_attachments(items)
    # Then it is a permanent error (dead-lettered, not retried)
    assert isinstance(error.value, PermanentError)


def test_a_file_under_attachments_is_read(storage: LocalStorage) -> None:
    [attachment] = load_attachments([{"storage_key": "attachments/7/q1.pdf", "filename": "q1.pdf"}])
    assert (attachment.filename, attachment.content) == ("q1.pdf", b"%PDF-1.4")


def test_a_link_under_attachments_to_a_backup_is_refused(storage: LocalStorage) -> None:
    # Given a symbolic link under attachments/ that leads to the backup
    link = storage.path("attachments/7/report.pdf")
    link.symlink_to(storage.path("backups/2026-12-01/edujobs.sqlite3"))
    # When it is attached, Then it is refused as leading out of attachments/, and nothing is read
    with pytest.raises(AttachmentNotAllowedError, match="links outside attachments/"):
        load_attachments([{"storage_key": "attachments/7/report.pdf", "filename": "report.pdf"}])
