"""Dead letters: what a worker cannot process ends in `.XQ` with why, and the worker goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from tests.amqp import depth, dramatiq_message, publish, take
from tests.e2e.conftest import module_worker, recorded, reset_queues
from tests.worker import WorkerProcess

KEY = b"test-signing-key"


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    """One worker for the module's tests (each resets the queues and the record first)."""
    with module_worker(EDUJOBS_MAX_PAYLOAD_BYTES="4096") as started:
        yield started


@pytest.fixture
def edujobs_env(shared: tuple[dict[str, str], WorkerProcess]) -> dict[str, str]:
    return shared[0]


@pytest.fixture
def amqp_url(edujobs_env: dict[str, str]) -> str:
    reset_queues(edujobs_env["EDUJOBS_RABBITMQ_URL"], "maintenance", "notifications")
    return edujobs_env["EDUJOBS_RABBITMQ_URL"]


@pytest.fixture
def redis_key(edujobs_env: dict[str, str]) -> str:
    redis.Redis().delete(edujobs_env["EDUJOBS_TEST_KEY"])
    return edujobs_env["EDUJOBS_TEST_KEY"]


@pytest.fixture
def worker(shared: tuple[dict[str, str], WorkerProcess], amqp_url: str, redis_key: str) -> WorkerProcess:
    assert shared[1].process.poll() is None, shared[1].output()[-3000:]
    return shared[1]


def send(url: str, actor: str, kwargs: dict[str, object], *, key: bytes | None = KEY) -> dict[str, object]:
    queue = "notifications" if actor.startswith("notifications.") else "maintenance"
    message = dramatiq_message(actor, queue, kwargs, key=key)
    publish(url, queue, message)
    return message


def test_garbage_is_kept_byte_for_byte_and_the_worker_goes_on(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # Given raw bytes that are not JSON, and JSON that is not a Dramatiq message, straight on the queue
    garbage = b"\x00\xff not json at all \xfe"
    publish(amqp_url, "maintenance", garbage)
    publish(amqp_url, "maintenance", b'{"hello": "world"}')
    # When a valid message follows them
    send(amqp_url, "testing.record", {"value": "after-garbage"})
    # Then both land in maintenance.XQ, the bytes untouched, with the reason as headers
    dead = take(amqp_url, "maintenance.XQ", 2)
    assert dead[0].body == garbage
    assert dead[1].body == b'{"hello": "world"}'
    for letter in dead:
        assert letter.headers["x-edujobs-reason"] == "undecodable"
        assert letter.headers["x-edujobs-fingerprint"]
    # And the worker kept processing
    take_until(redis_key, ["after-garbage"])
    assert worker.process.poll() is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("options", []), ("actor_name", 7), ("actor_name", ["testing.record"]), ("message_timestamp", "now")],
)
def test_a_message_with_a_field_of_the_wrong_type_is_undecodable_and_the_worker_goes_on(
    worker: WorkerProcess, amqp_url: str, redis_key: str, field: str, value: object
) -> None:
    # Given a signed, otherwise valid message whose one field has the wrong JSON type
    malformed = dramatiq_message("testing.record", "maintenance", {"value": "malformed"}, key=KEY)
    malformed[field] = value
    body = json.dumps(malformed).encode()
    publish(amqp_url, "maintenance", body)
    # When a valid message follows it
    send(amqp_url, "testing.record", {"value": "after-malformed"})
    # Then the malformed one is dead-lettered as undecodable, byte for byte, naming the field
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert dead.body == body
    assert dead.headers["x-edujobs-reason"] == "undecodable"
    assert f"field '{field}'" in dead.headers["x-edujobs-error"]
    # And the worker kept processing: only the valid message ran
    take_until(redis_key, ["after-malformed"])
    assert depth(amqp_url, "maintenance") == 0
    assert worker.process.poll() is None


def test_unknown_actor_unsigned_and_tampered_messages_are_dead_lettered(
    worker: WorkerProcess, amqp_url: str
) -> None:
    # Given a message for an actor nobody declared, an unsigned one and a tampered one
    send(amqp_url, "testing.no_such_actor", {})
    send(amqp_url, "testing.record", {"value": "unsigned"}, key=None)
    tampered = dramatiq_message("testing.record", "maintenance", {"value": "original"}, key=KEY)
    tampered["kwargs"] = {"value": "changed"}
    publish(amqp_url, "maintenance", tampered)
    # Then each lands in the dead-letter queue with its reason
    dead = take(amqp_url, "maintenance.XQ", 3)
    reasons = sorted(d.headers["x-edujobs-reason"] for d in dead)
    assert reasons == ["bad_signature", "bad_signature", "unknown_actor"]
    by_reason = {d.headers["x-edujobs-reason"]: d for d in dead}
    assert "ActorNotFound" in by_reason["unknown_actor"].headers["x-edujobs-exception"]
    # And the refused ones are kept byte for byte (no record written into them), the headers say why
    for letter in dead:
        if letter.headers["x-edujobs-reason"] == "bad_signature":
            assert "dead_letter" not in letter.message()["options"]
            assert letter.headers["x-edujobs-exception"] == "SignatureError"


def test_a_message_past_its_age_limit_is_dead_lettered_as_such(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # Given a message that may wait at most 1 ms before it runs
    old = dramatiq_message(
        "testing.record", "maintenance", {"value": "stale"}, key=KEY, options={"max_age": 1}
    )
    publish(amqp_url, "maintenance", old)
    # When a fresh message follows it
    send(amqp_url, "testing.record", {"value": "fresh"})
    # Then the stale one is dead-lettered with reason age_limit, without running
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert dead.headers["x-edujobs-reason"] == "age_limit"
    assert dead.headers["x-edujobs-exception"] == "AgeLimitExceeded"
    assert "over its max_age of 1 ms" in dead.headers["x-edujobs-error"]
    assert dead.message()["message_id"] == old["message_id"]
    take_until(redis_key, ["fresh"])


def test_a_permanent_error_is_dead_lettered_at_once_with_its_record(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # When an actor raises a PermanentError
    sent = send(amqp_url, "testing.fail_permanently", {"user_id": 9})
    # Then it was attempted once and dead-lettered with the full record
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert recorded(redis_key) == ["attempt"]
    message = dead.message()
    assert message["message_id"] == sent["message_id"]
    record = message["options"]["dead_letter"]
    assert record["reason"] == "permanent_error"
    assert record["exception_type"] == "PermanentError"
    assert record["error"] == "user 9 does not exist"
    assert "raise PermanentError" in record["traceback"]
    assert record["attempts"] == 1
    assert record["first_failure_at"] <= record["last_failure_at"]
    assert record["worker"] and len(record["fingerprint"]) == 12
    assert dead.headers["x-edujobs-attempts"] == 1
    assert "raise PermanentError" in dead.headers["x-edujobs-traceback"]
    # And the worker's log names the actor and message id, never the arguments
    assert str(sent["message_id"]) in worker.output()
    assert "user_id=9" not in worker.output()


def test_a_transient_error_is_retried_then_dead_lettered_when_exhausted(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # When an actor with max_retries=2 always raises a TransientError
    send(amqp_url, "testing.fail_transiently", {})
    # Then it was attempted three times, then dead-lettered as exhausted
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert recorded(redis_key) == ["attempt"] * 3
    record = dead.message()["options"]["dead_letter"]
    assert record["reason"] == "retries_exhausted"
    assert record["attempts"] == 3
    assert record["exception_type"] == "TransientError"


def test_invalid_and_oversized_payloads_are_dead_lettered(worker: WorkerProcess, amqp_url: str) -> None:
    # Given a signed message whose arguments break the contract, and one over the size bound
    send(amqp_url, "notifications.send_email", {"user_id": "seven", "template": "welcome"})
    big = send(amqp_url, "testing.record", {"value": "x" * 5000})
    # Then both are dead-lettered with reasons that say what is wrong
    dead = {d.headers["x-edujobs-reason"]: d for d in take(amqp_url, "notifications.XQ", 1)}
    dead |= {d.headers["x-edujobs-reason"]: d for d in take(amqp_url, "maintenance.XQ", 1)}
    assert "user_id" in dead["invalid_payload"].message()["options"]["dead_letter"]["error"]
    oversized = dead["payload_too_large"]
    assert "over the 4096-byte limit" in oversized.headers["x-edujobs-error"]
    # And the oversized one is kept as it was sent, untouched
    assert oversized.message() == big
    assert depth(amqp_url, "notifications") == 0


def take_until(key: str, expected: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if recorded(key) == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"expected {expected}, got {recorded(key)}")


def test_dead_letter_headers_survive_json_round_trip(worker: WorkerProcess, amqp_url: str) -> None:
    # A dead letter is still a Dramatiq message: an operator can requeue it as is.
    send(amqp_url, "testing.fail_permanently", {"user_id": 1})
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    message = json.loads(dead.body)
    assert {"queue_name", "actor_name", "args", "kwargs", "options", "message_id"} <= set(message)


def test_job_state_follows_each_message(
    worker: WorkerProcess, amqp_url: str, edujobs_env: dict[str, str]
) -> None:
    from store.db import make_engine
    from store.jobs import JobStore

    # When one message succeeds and one fails permanently
    ok = send(amqp_url, "testing.record", {"value": "fine"})
    bad = send(amqp_url, "testing.fail_permanently", {"user_id": 5})
    take(amqp_url, "maintenance.XQ", 1)
    # Then `jobs show` would tell: one succeeded, one dead with its error
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    jobs = JobStore(engine)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done, dead = jobs.get(str(ok["message_id"])), jobs.get(str(bad["message_id"]))
        if done and dead and done.state == "succeeded" and dead.state == "dead":
            break
        time.sleep(0.2)
    engine.dispose()
    assert done is not None and done.state == "succeeded" and done.actor_name == "testing.record"
    assert dead is not None and dead.state == "dead" and dead.attempts == 1
    assert dead.error == "PermanentError: user 5 does not exist"
