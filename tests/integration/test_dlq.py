"""Dead-letter review on the real RabbitMQ: listing keeps every dead letter in place and in order,
requeue republishes with a confirm before removing, purge removes, every action is audited."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from sqlalchemy import Engine

from brokers import dlq as records
from brokers.settings import Settings
from brokers.stack import build_broker
from brokers.topology import DOMAIN_QUEUES
from contracts.signing import verify_message
from ops.dlq import DeadLetter, DeadLetterError, DeadLetters, NotFound, Selection, redact
from store import audit
from store.db import make_engine
from store.migrate import upgrade
from tests.amqp import depth, dramatiq_message, take

KEY = b"test-signing-key"


@pytest.fixture
def topology(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # The operators' tools sign a requeued message's new state with the key of the settings.
    monkeypatch.setenv("EDUJOBS_SIGNING_KEY", KEY.decode())
    broker = build_broker(Settings(rabbitmq_url=amqp_url))
    broker.declare_topology(DOMAIN_QUEUES)
    broker.close()
    return amqp_url


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    upgrade(migrated_database_url)
    engine = make_engine(migrated_database_url)
    yield engine
    engine.dispose()


def dead_letter(
    url: str,
    actor: str,
    kwargs: dict[str, Any],
    *,
    queue: str = "maintenance",
    reason: str = "permanent_error",
    exception: str = "PermanentError",
    error: str = "it broke",
    traceback: str = "",
    last_failure_at: int | None = None,
) -> dict[str, Any]:
    """Publish a dead letter the way the broker does: the message with its record, and the headers."""
    message = dramatiq_message(actor, queue, kwargs, key=KEY, options={"retries": 3, "broker_priority": 2})
    record = records.build_record(
        reason=reason,
        actor_name=actor,
        worker="w1",
        exception_type=exception,
        error=error,
        traceback=traceback,
        attempts=3,
    )
    if last_failure_at is not None:
        record["last_failure_at"] = last_failure_at
    message["options"]["dead_letter"] = record
    publish_raw(url, queue + ".XQ", json.dumps(message).encode(), records.record_headers(record), priority=2)
    return message


def publish_raw(
    url: str, queue: str, body: bytes, headers: dict[str, Any], priority: int | None = None
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2, headers=headers, priority=priority)
        channel.basic_publish("", queue, body, properties, mandatory=True)
    finally:
        connection.close()


def ids(letters: list[DeadLetter]) -> list[str]:
    return [letter.id for letter in letters]


def test_listing_twice_returns_the_same_dead_letters_in_the_same_order(topology: str) -> None:
    # Given five dead letters, one of them an undecodable body
    sent = [dead_letter(topology, "testing.fail_permanently", {"user_id": i}) for i in range(4)]
    record = records.build_record(reason="undecodable", actor_name="", worker="w1", error="not json")
    publish_raw(topology, "maintenance.XQ", b"\x00\xffgarbage", records.record_headers(record))
    letters = DeadLetters(topology)
    # When they are listed twice
    first, second = letters.list("maintenance"), letters.list("maintenance")
    # Then both listings are identical, in publishing order, and the queue still holds all five
    assert ids(first) == ids(second)
    assert ids(first)[:4] == [m["message_id"] for m in sent]
    assert depth(topology, "maintenance.XQ") == 5
    assert [x.reason for x in first] == ["permanent_error"] * 4 + ["undecodable"]
    raw = first[4]
    assert not raw.decoded and raw.id.startswith("raw-")
    assert raw.detail(reveal=True)["raw_base64"] == "AP9nYXJiYWdl"
    assert raw.fingerprint == record["fingerprint"]


def test_listing_filters_and_stats_group_by_fingerprint(topology: str) -> None:
    dead_letter(topology, "testing.fail_permanently", {"user_id": 1}, error="user 1 does not exist")
    dead_letter(topology, "testing.fail_permanently", {"user_id": 2})
    dead_letter(
        topology, "testing.record", {"value": "x"}, reason="retries_exhausted", exception="TimeoutError"
    )
    letters = DeadLetters(topology)
    assert len(letters.list("maintenance", actor="testing.record")) == 1
    assert len(letters.list("maintenance", reason="permanent_error")) == 2
    assert len(letters.list("maintenance", limit=1)) == 1
    assert letters.list("maintenance", since_ms=2**62) == []
    stats = {s["queue"]: s for s in letters.stats()}
    assert stats["notifications"]["count"] == 0
    maintenance = stats["maintenance"]
    assert maintenance["count"] == 3 and maintenance["oldest"] is not None
    top = maintenance["groups"][0]
    assert top["count"] == 2 and top["actor"] == "testing.fail_permanently"
    assert top["sample_error"] == "user 1 does not exist"
    with pytest.raises(DeadLetterError, match="unknown queue"):
        letters.list("nope")


def test_show_redacts_personal_data_unless_revealed_and_reveal_is_audited(
    topology: str, engine: Engine
) -> None:
    message = dead_letter(
        topology,
        "notifications.send_email",
        {"user_id": 7, "to": "ada@example.org", "first_name": "Ada", "note": "call +33 6 12 34 56 78"},
        queue="notifications",
    )
    letters = DeadLetters(topology, engine=engine)
    shown = letters.show(message["message_id"])
    assert shown["kwargs"] == {
        "user_id": 7,
        "to": "[redacted]",
        "first_name": "[redacted]",
        "note": "call [redacted]",
    }
    assert audit.recent(engine, action="dlq.reveal") == []
    revealed = letters.show(message["message_id"], reveal=True, operator="alice")
    assert revealed["kwargs"]["to"] == "ada@example.org"
    [entry] = audit.recent(engine, action="dlq.reveal")
    assert (entry.actor, entry.target, entry.details["id"]) == (
        "alice",
        "notifications",
        message["message_id"],
    )
    with pytest.raises(NotFound):
        letters.show("missing")


def test_requeue_by_id_republishes_with_lineage_and_removes_only_that_dead_letter(
    topology: str, engine: Engine
) -> None:
    sent = [dead_letter(topology, "testing.fail_permanently", {"user_id": i}) for i in range(3)]
    letters = DeadLetters(topology, engine=engine)
    # When the middle one is requeued
    result = letters.requeue("maintenance", Selection(ids=frozenset({sent[1]["message_id"]})), operator="bob")
    # Then it is back on its queue with the same id and signature, retries reset and its lineage kept
    assert result.ids == [sent[1]["message_id"]]
    [back] = take(topology, "maintenance", 1)
    message = back.message()
    assert message["message_id"] == sent[1]["message_id"]
    assert message["options"]["signature"] == sent[1]["options"]["signature"]
    assert "retries" not in message["options"] and "dead_letter" not in message["options"]
    lineage = message["options"]["requeued_from"]
    assert lineage["reason"] == "permanent_error" and lineage["message_id"] == sent[1]["message_id"]
    assert back.priority == 2
    # And the others stay in the dead-letter queue, in order
    assert ids(letters.list("maintenance")) == [sent[0]["message_id"], sent[2]["message_id"]]
    [entry] = audit.recent(engine, action="dlq.requeue")
    assert entry.actor == "bob" and entry.details["count"] == 1


def test_a_requeued_letter_carries_a_signed_state_that_a_worker_accepts(topology: str) -> None:
    # Given a dead letter of a message that had a delivery state (retries, eta)
    sent = dead_letter(topology, "testing.fail_permanently", {"user_id": 1})
    # When it is requeued
    DeadLetters(topology).requeue("maintenance", Selection(all=True))
    # Then its sender signature is the original, its new state (the lineage) signed with the key
    [back] = take(topology, "maintenance", 1)
    message = back.message()
    assert message["options"]["signature"] == sent["options"]["signature"]
    assert verify_message(KEY, message) is None
    assert verify_message(b"another-key", message) is not None


def test_a_dead_letter_whose_signature_does_not_check_out_is_not_requeued(topology: str) -> None:
    # Given a forged dead letter (its arguments changed after signing) beside a genuine one
    genuine = dead_letter(topology, "testing.fail_permanently", {"user_id": 1})
    forged = dramatiq_message("testing.fail_permanently", "maintenance", {"user_id": 2}, key=KEY)
    forged["kwargs"] = {"user_id": 666}
    publish_raw(
        topology, "maintenance.XQ", json.dumps(forged).encode(), {"x-edujobs-reason": "bad_signature"}
    )
    # When an operator requeues everything
    result = DeadLetters(topology).requeue("maintenance", Selection(all=True))
    # Then the genuine one is requeued, the forged one stays, skipped with the reason
    assert result.ids == [genuine["message_id"]]
    [skipped] = result.skipped
    assert skipped["id"] == forged["message_id"] and "signature does not check out" in skipped["why"]
    assert [m.message()["message_id"] for m in take(topology, "maintenance", 1)] == [genuine["message_id"]]
    assert ids(DeadLetters(topology).list("maintenance")) == [forged["message_id"]]


def test_requeue_by_fingerprint_and_all_and_dry_run(topology: str) -> None:
    a = [dead_letter(topology, "testing.fail_permanently", {"user_id": i}) for i in range(2)]
    b = dead_letter(
        topology, "testing.record", {"value": "v"}, reason="retries_exhausted", exception="TimeoutError"
    )
    letters = DeadLetters(topology)
    fingerprint = a[0]["options"]["dead_letter"]["fingerprint"]
    dry = letters.requeue("maintenance", Selection(fingerprint=fingerprint), dry_run=True)
    assert dry.count == 2 and depth(topology, "maintenance.XQ") == 3 and depth(topology, "maintenance") == 0
    done = letters.requeue("maintenance", Selection(fingerprint=fingerprint))
    assert done.ids == [m["message_id"] for m in a]
    assert ids(letters.list("maintenance")) == [b["message_id"]]
    assert letters.requeue("maintenance", Selection(all=True)).ids == [b["message_id"]]
    assert depth(topology, "maintenance.XQ") == 0
    assert [r.message()["message_id"] for r in take(topology, "maintenance", 3)] == [
        a[0]["message_id"],
        a[1]["message_id"],
        b["message_id"],
    ]
    with pytest.raises(DeadLetterError, match="exactly one"):
        Selection()


def test_a_requeue_interrupted_after_the_confirm_and_before_the_removal_loses_nothing(topology: str) -> None:
    sent = [dead_letter(topology, "testing.fail_permanently", {"user_id": i}) for i in range(3)]
    letters = DeadLetters(topology)

    def crash_on_second(letter: DeadLetter) -> None:
        if letter.id == sent[1]["message_id"]:
            raise KeyboardInterrupt("operator killed the process")

    # When the process dies after the second message is confirmed but before its dead letter is removed
    with pytest.raises(KeyboardInterrupt):
        letters.requeue("maintenance", Selection(all=True), after_publish=crash_on_second)
    # Then the first was moved, the second exists twice (requeued and still dead: same id, deduped by
    # the ledger), the third is untouched, and the order of the dead letters is unchanged
    assert ids(letters.list("maintenance")) == [sent[1]["message_id"], sent[2]["message_id"]]
    requeued = [r.message()["message_id"] for r in take(topology, "maintenance", 2)]
    assert requeued == [sent[0]["message_id"], sent[1]["message_id"]]


def test_purge_older_than_and_export(topology: str, engine: Engine) -> None:
    old = dead_letter(topology, "testing.fail_permanently", {"user_id": 1}, last_failure_at=1_000)
    new = dead_letter(topology, "testing.fail_permanently", {"user_id": 2})
    letters = DeadLetters(topology, engine=engine)
    out = io.StringIO()
    assert letters.export("maintenance", out.write) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"]["message_id"] for line in lines] == [old["message_id"], new["message_id"]]
    assert depth(topology, "maintenance.XQ") == 2
    assert letters.purge("maintenance", older_than_ms=86_400_000, dry_run=True).count == 1
    assert letters.purge("maintenance", older_than_ms=86_400_000, operator="carol").ids == [old["message_id"]]
    assert ids(letters.list("maintenance")) == [new["message_id"]]
    assert letters.purge("maintenance").count == 1
    assert depth(topology, "maintenance.XQ") == 0
    entries = audit.recent(engine, action="dlq.purge")
    assert [(e.actor, e.details["count"]) for e in entries][-1] == ("carol", 1)
    assert len(entries) == 2


def test_redact_keeps_ids_and_hides_personal_data() -> None:
    assert redact({"user_id": 3, "email": "x@y.io", "tags": ["a@b.co"], "api_token": "abc"}) == {
        "user_id": 3,
        "email": "[redacted]",
        "tags": ["[redacted]"],
        "api_token": "[redacted]",
    }
