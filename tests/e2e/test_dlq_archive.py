"""``maintenance.archive_dead_letters`` run by a real worker: what a worker dead-lettered ends in
the archive in storage, out of ``Q.XQ``, and ``edujobs dlq list --archived`` shows it (issue 14,
finding 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from brokers.client import Client
from ops.cli import app
from store import dead_letter_archive
from store.storage import LocalStorage, get_storage
from tests.amqp import depth, publish
from tests.worker import WorkerProcess, wait_until

runner = CliRunner()


def test_the_scheduled_archival_moves_dead_letters_to_storage(
    edujobs_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker whose archival takes every dead letter (a margin as long as the TTL)
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    env = {
        **edujobs_env,
        "EDUJOBS_STORAGE_URL": f"file:{tmp_path / 'storage'}",
        "EDUJOBS_DEAD_LETTER_ARCHIVE_MARGIN_DAYS": "14",
    }
    worker = WorkerProcess(env, threads=2).wait_ready()
    try:
        # And a body it could not decode, dead-lettered by it
        publish(url, "maintenance", b"\x00\xff not a message")
        wait_until(lambda: depth(url, "maintenance.XQ") == 1, what="the dead letter")
        # When the crontab's archival job is sent
        client = Client(url, signing_key=b"test-signing-key")
        client.send("maintenance.archive_dead_letters", {})
        client.close()
        # Then the dead letter leaves maintenance.XQ for the archive, byte for byte
        storage = LocalStorage(tmp_path / "storage")
        wait_until(lambda: dead_letter_archive.count(storage, "maintenance") == 1, what="the archive")
        wait_until(lambda: depth(url, "maintenance.XQ") == 0, what="an empty maintenance.XQ")
        [archived] = dead_letter_archive.read(storage, "maintenance")
        assert archived.body == b"\x00\xff not a message"
        assert archived.headers["x-edujobs-reason"] == "undecodable"
    finally:
        worker.stop()
    # And the operator finds it with --archived
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", env["EDUJOBS_STORAGE_URL"])
    get_storage.cache_clear()
    listed = runner.invoke(app, ["dlq", "list", "maintenance", "--archived", "--json"])
    get_storage.cache_clear()
    assert [x["reason"] for x in json.loads(listed.output)] == ["undecodable"]
