"""Dead letters are archived to storage before ``Q.XQ``'s TTL drops them (issue 14, finding 7), on
the real RabbitMQ: the archive is written before the letters leave ``Q.XQ`` (a crash archives twice,
never loses), and ``edujobs dlq`` and the API read the archive like the live queue."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from actors.maintenance.dead_letters import archive_dead_letters
from brokers import dlq as records
from brokers.queue_stats import QueueDepth, QueueStatsReader, vhost_of
from brokers.topology import ALL_QUEUES
from ops.cli import app
from ops.dlq import DeadLetters
from store import dead_letter_archive, tokens
from store.storage import LocalStorage, StorageError, get_storage
from tests.amqp import depth, dramatiq_message
from tests.integration.test_dlq import engine, topology  # noqa: F401  (fixtures)
from tests.integration.test_dlq_cli import env  # noqa: F401  (fixture)
from tests.integration.test_dlq_odd_letters import api  # noqa: F401  (fixture)
from tests.odd_letters import KEY, publish_odd_letters
from tests.services import MANAGEMENT_URL
from tests.worker import wait_until

DAY_MS = 86_400_000
TTL_MS, MARGIN_MS = 14 * DAY_MS, 2 * DAY_MS
runner = CliRunner()


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStorage]:
    """The storage of this test, also where the CLI looks for the archive."""
    monkeypatch.setenv("EDUJOBS_STORAGE_URL", f"file:{tmp_path / 'storage'}")
    get_storage.cache_clear()
    yield LocalStorage(tmp_path / "storage")
    get_storage.cache_clear()


def aged_dead_letter(url: str, kwargs: dict[str, Any], *, age_days: float) -> dict[str, Any]:
    """A dead letter as a worker leaves it in maintenance.XQ, dead-lettered ``age_days`` ago."""
    message = dramatiq_message("testing.fail_permanently", "maintenance", kwargs, key=KEY)
    record = records.build_record(
        reason="permanent_error",
        actor_name=message["actor_name"],
        worker="w1",
        exception_type="PermanentError",
    )
    message["options"]["dead_letter"] = record
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            delivery_mode=2,
            headers=records.record_headers(record),
            timestamp=int(time.time() - age_days * 86_400),
        )
        channel.basic_publish("", "maintenance.XQ", json.dumps(message).encode(), properties, mandatory=True)
    finally:
        connection.close()
    return message


def archive(url: str, storage: LocalStorage, **options: Any) -> dict[str, Any]:
    return archive_dead_letters(
        url, storage, ttl_ms=TTL_MS, margin_ms=MARGIN_MS, queues=("maintenance",), **options
    )


def cli(*args: str) -> Any:
    result = runner.invoke(app, ["dlq", *args, "--json"])
    assert result.exit_code == 0, (args, result.output[-2000:], result.exception)
    return json.loads(result.output)


def test_letters_near_their_ttl_are_archived_then_removed_and_readable_like_live_ones(
    env: str,  # noqa: F811
    storage: LocalStorage,
) -> None:
    # Given three dead letters 13 days old (the TTL is 14 days, the margin 2) and one of a day
    old = [
        aged_dead_letter(env, {"user_id": i, "email": f"pupil{i}@school.edu"}, age_days=13) for i in range(3)
    ]
    young = aged_dead_letter(env, {"user_id": 9}, age_days=1)
    # When the archival runs
    result = archive(env, storage)
    # Then the three old ones are in one gzipped JSON-lines file of today, byte for byte
    assert result["archived"] == 3
    [key] = result["queues"]["maintenance"]["files"]
    assert key.startswith(f"dead-letters/maintenance/{time.strftime('%Y-%m-%d', time.gmtime())}/")
    lines = gzip.decompress(storage.get_bytes(key)).splitlines()
    assert [json.loads(line)["queue"] for line in lines] == ["maintenance"] * 3
    assert [a.body for a in dead_letter_archive.read(storage, "maintenance")] == [
        json.dumps(m).encode() for m in old
    ]
    # And only the young one is left in maintenance.XQ
    assert depth(env, "maintenance.XQ") == 1
    assert [x["id"] for x in cli("list", "maintenance")] == [young["message_id"]]
    # And the archive is listed, shown (redacted unless revealed), exported and counted
    archived = cli("list", "maintenance", "--archived")
    assert [x["id"] for x in archived] == [m["message_id"] for m in old]
    assert all(x["archived"]["file"] == key for x in archived)
    shown = cli("show", old[0]["message_id"], "--archived")
    assert shown["kwargs"]["email"] == "[redacted]" and "pupil0" not in json.dumps(shown)
    revealed = cli("show", old[0]["message_id"], "--archived", "--reveal", "--as", "dave")
    assert revealed["kwargs"]["email"] == "pupil0@school.edu"
    missing = runner.invoke(app, ["dlq", "show", young["message_id"], "--archived"])
    assert missing.exit_code == 1 and "no archived dead letter" in missing.output
    exported = runner.invoke(app, ["dlq", "export", "maintenance", "-", "--archived"])
    assert len(exported.output.splitlines()) == 3 and "pupil" not in exported.output
    [stats] = [s for s in cli("stats") if s["queue"] == "maintenance"]
    assert (stats["count"], stats["archived"]) == (1, 3)
    table = runner.invoke(app, ["dlq", "list", "maintenance", "--archived"])
    assert table.exit_code == 0 and "3 dead letters in the archive of maintenance" in table.output


def test_a_crash_between_the_archive_and_the_removal_archives_twice_and_loses_nothing(
    topology: str,  # noqa: F811
    storage: LocalStorage,
) -> None:
    # Given two dead letters about to expire
    sent = [aged_dead_letter(topology, {"user_id": i}, age_days=13) for i in range(2)]

    def crash(_key: str) -> None:
        raise KeyboardInterrupt  # the process is stopped right after writing the archive

    # When an archival is interrupted after its write, and the next one runs
    with pytest.raises(KeyboardInterrupt):
        archive(topology, storage, after_write=crash)
    assert depth(topology, "maintenance.XQ") == 2  # nothing was removed
    archive(topology, storage)
    # Then both letters were archived twice, are shown once, and are gone from maintenance.XQ
    assert dead_letter_archive.count(storage, "maintenance") == 4
    letters = [letter.body for letter in dead_letter_archive.read(storage, "maintenance")]
    assert letters == [json.dumps(m).encode() for m in sent] * 2
    assert depth(topology, "maintenance.XQ") == 0


def test_when_storage_fails_no_letter_leaves_the_queue(topology: str, tmp_path: Path) -> None:  # noqa: F811
    # Given dead letters about to expire, and a storage that cannot write (its root is a file)
    sent = [aged_dead_letter(topology, {"user_id": i}, age_days=13.5) for i in range(3)]
    (tmp_path / "not-a-directory").write_text("")
    broken = LocalStorage(tmp_path / "not-a-directory")
    # When the archival runs, it fails (LocalStorage lets a NotADirectoryError through here)
    with pytest.raises((StorageError, OSError)):
        archive(topology, broken)
    # Then every letter is still in maintenance.XQ, in its place
    assert depth(topology, "maintenance.XQ") == 3
    assert [letter.id for letter in DeadLetters(topology).list("maintenance")] == [
        m["message_id"] for m in sent
    ]


def test_letters_of_unknown_or_future_age_are_archived_and_odd_ones_stay_readable(
    env: str,  # noqa: F811
    storage: LocalStorage,
) -> None:
    # Given the corpus of odd letters (published without a timestamp), then one dated tomorrow
    odd = publish_odd_letters(env)
    aged_dead_letter(env, {"user_id": 1}, age_days=-1)
    # When the archival runs
    result = archive(env, storage)
    # Then all are archived (nothing tells when RabbitMQ will drop them), and each can be shown
    assert result["archived"] == len(odd) + 1 and depth(env, "maintenance.XQ") == 0
    listed = cli("list", "maintenance", "--archived", "--limit", "1000")
    assert len(listed) == len(odd) + 1
    for letter in listed:
        assert cli("show", letter["id"], "--archived", "--queue", "maintenance")["id"] == letter["id"]


def test_a_damaged_archive_line_is_skipped_and_the_rest_is_read(storage: LocalStorage) -> None:
    # Given an archive file whose middle line is not an archived letter
    good = dead_letter_archive.archived_letter("media", b"{}", {"x-edujobs-reason": "undecodable"}, 0, 1, 5)
    data = good.line() + b'{"body_base64": "%%%"}\n[1]\n' + good.line()
    storage.put_bytes("dead-letters/media/2026-01-01/000000-abcd-n3.jsonl.gz", gzip.compress(data))
    # When it is read
    letters = list(dead_letter_archive.read(storage, "media"))
    # Then the two good letters are read
    assert [letter.body for letter in letters] == [b"{}", b"{}"]


def test_the_api_lists_and_shows_archived_letters(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    storage: LocalStorage,
) -> None:
    # Given an archived dead letter and one still in maintenance.XQ
    old = aged_dead_letter(topology, {"user_id": 1, "phone": "+33612345678"}, age_days=13)
    archive(topology, storage)
    young = aged_dead_letter(topology, {"user_id": 2}, age_days=0)
    headers = {
        "Authorization": "Bearer " + tokens.create(engine, name="d", scopes=["ops:read"], created_by="t")
    }
    # When the archive is listed and the letter shown
    listed = api.get("/v1/dlq/maintenance?archived=true", headers=headers).json()
    shown = api.get(f"/v1/dlq/maintenance/{old['message_id']}?archived=true", headers=headers).json()
    stats = api.get("/v1/dlq", headers=headers).json()
    # Then the API serves the archived one, redacted, and counts both
    assert [x["id"] for x in listed] == [old["message_id"]]
    assert shown["kwargs"]["phone"] == "[redacted]"
    assert [x["id"] for x in api.get("/v1/dlq/maintenance", headers=headers).json()] == [young["message_id"]]
    [maintenance] = [s for s in stats if s["queue"] == "maintenance"]
    assert (maintenance["count"], maintenance["archived"]) == (1, 1)
    assert (
        api.get(f"/v1/dlq/maintenance/{young['message_id']}?archived=true", headers=headers).status_code
        == 404
    )


def test_queues_never_declared_have_nothing_to_archive(amqp_url: str, storage: LocalStorage) -> None:
    # Given a vhost where no queue was ever declared, when the archival runs over every queue
    result = archive_dead_letters(amqp_url, storage, ttl_ms=TTL_MS, margin_ms=MARGIN_MS)
    # Then it archives nothing and says so per queue (the domains' and the event handlers')
    assert result["archived"] == 0 and set(result["queues"]) == set(ALL_QUEUES)
    assert {"notifications", "maintenance", "notifications.on_user_created"} <= set(ALL_QUEUES)


def test_the_oldest_dead_letter_s_age_and_the_ttl_are_read_from_rabbitmq(topology: str) -> None:  # noqa: F811
    # Given a dead letter 13 days old ahead of a fresh one, in a Q.XQ declared with the 14-day TTL
    aged_dead_letter(topology, {"user_id": 1}, age_days=13)
    aged_dead_letter(topology, {"user_id": 2}, age_days=0)
    reader = QueueStatsReader(
        management_url=MANAGEMENT_URL.replace("://", "://guest:guest@"),
        vhost=vhost_of(topology),
        queues=("maintenance",),
    )
    # When the metrics read the queue figures (RabbitMQ refreshes them every few seconds)
    found: list[QueueDepth] = []

    def read() -> bool:
        found[:] = reader.read()
        return found[0].dead == 2 and found[0].dead_oldest_age_seconds is not None

    wait_until(read, what="the figures")
    reader.close()
    # Then the oldest dead letter's age is 13 days, and the TTL is the one RabbitMQ applies
    [depth_] = found
    assert depth_.dead_oldest_age_seconds is not None
    assert 13 * 86_400 - 60 < depth_.dead_oldest_age_seconds < 13 * 86_400 + 60
    assert depth_.dead_ttl_seconds == 14 * 86_400
