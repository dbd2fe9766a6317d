"""Signed means signed: a worker runs only what was signed with the key, as it was signed.

Each test plays the attacker who can publish to RabbitMQ (but holds no key) against a real
`dramatiq actors` worker, and checks what a user would: nothing ran, and the message is in `.XQ`
with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from contracts.signing import Keyring, sender_document, sign_message
from tests.amqp import depth, dramatiq_message, publish, take
from tests.e2e.conftest import module_worker, recorded, reset_queues
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"
SENDER_FIELDS = ("message_id", "actor_name", "queue_name", "args", "kwargs", "message_timestamp", "options")


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    """One worker for the module's tests (each resets the queues and the record first)."""
    with module_worker() as started:
        yield started


@pytest.fixture
def amqp_url(shared: tuple[dict[str, str], WorkerProcess]) -> str:
    reset_queues(shared[0]["EDUJOBS_RABBITMQ_URL"], "maintenance")
    return shared[0]["EDUJOBS_RABBITMQ_URL"]


@pytest.fixture
def redis_key(shared: tuple[dict[str, str], WorkerProcess]) -> str:
    redis.Redis().delete(shared[0]["EDUJOBS_TEST_KEY"])
    return shared[0]["EDUJOBS_TEST_KEY"]


@pytest.fixture
def worker(shared: tuple[dict[str, str], WorkerProcess], amqp_url: str, redis_key: str) -> WorkerProcess:
    assert shared[1].process.poll() is None, shared[1].output()[-3000:]
    return shared[1]


def record(value: str, *, key: bytes | None = KEY, options: dict[str, Any] | None = None) -> dict[str, Any]:
    return dramatiq_message("testing.record", "maintenance", {"value": value}, key=key, options=options)


def then_it_ran_only(amqp_url: str, redis_key: str, canary: str, *, queue: str = "maintenance") -> None:
    """A signed canary sent last has run, and nothing else did."""
    publish(amqp_url, queue, record(canary))
    wait_until(lambda: canary in recorded(redis_key), what=f"the canary {canary} running")
    assert recorded(redis_key) == [canary]


def test_an_unsigned_message_with_an_eta_is_dead_lettered_never_signed_by_the_worker(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # Given unsigned messages that ask for Dramatiq's delay path: eta 0 on the queue itself (the
    # worker would re-enqueue it, signing it on the way), on the delay queue, and far in the future
    publish(amqp_url, "maintenance", record("eta-zero", key=None, options={"eta": 0}))
    publish(
        amqp_url,
        "maintenance.DQ",
        {**record("on-dq", key=None, options={"eta": 0}), "queue_name": "maintenance.DQ"},
    )
    far = int(time.time() * 1000) + 86_400_000
    publish(amqp_url, "maintenance", record("far", key=None, options={"eta": far}))
    # Then each is dead-lettered as unsigned, none is parked or re-enqueued, and none ran
    dead = take(amqp_url, "maintenance.XQ", 3)
    assert {d.headers["x-edujobs-reason"] for d in dead} == {"bad_signature"}
    assert all("not signed" in d.headers["x-edujobs-error"] for d in dead)
    then_it_ran_only(amqp_url, redis_key, "canary")
    assert depth(amqp_url, "maintenance.park") == 0 and depth(amqp_url, "maintenance.DQ") == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pipe_target", {"queue_name": "maintenance", "actor_name": "testing.record", "args": [],
                         "kwargs": {"value": "attacker"}, "options": {}, "message_id": "x",
                         "message_timestamp": 1}),
        ("on_success", "testing.record"),
        ("throws", ["PermanentError"]),
        ("dead_letter", {"reason": 7}),
        ("retry_when", "anything"),
    ],
)  # fmt: skip
def test_an_option_edujobs_does_not_read_is_refused_signed_or_not(
    worker: WorkerProcess, amqp_url: str, redis_key: str, option: str, value: object
) -> None:
    # Given a signed message to which the attacker added an option Dramatiq would act on
    tampered = record("victim")
    tampered["options"][option] = value
    publish(amqp_url, "maintenance", tampered)
    # And the same option on a message signed with the key (a careless producer)
    signed = record("signed-victim", key=None)
    signed["options"] = {option: value}
    signed["options"]["signature"] = Keyring(KEY).sign(
        sender_document(**{k: signed[k] for k in SENDER_FIELDS})
    )
    publish(amqp_url, "maintenance", signed)
    # Then both are dead-lettered as invalid options naming it; nothing ran, nothing was enqueued
    dead = take(amqp_url, "maintenance.XQ", 2)
    assert {d.headers["x-edujobs-reason"] for d in dead} == {"invalid_options"}
    assert all(option in d.headers["x-edujobs-error"] for d in dead)
    then_it_ran_only(amqp_url, redis_key, "canary")
    assert worker.process.poll() is None


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"idempotency_key": "replayed-2"}, "sender"),
        ({"priority_name": "critical", "broker_priority": 9}, "sender"),
        ({"max_age": 999_999_999}, "sender"),
        ({"time_limit": 999_999_999}, "sender"),
        ({"max_retries": 100}, "sender"),
        ({"min_backoff": 0}, "sender"),
        ({"retries": 0}, "state"),
        ({"eta": 0}, "state"),
    ],
)
def test_changing_an_option_of_a_signed_message_breaks_its_signature(
    worker: WorkerProcess, amqp_url: str, redis_key: str, change: dict[str, Any], where: str
) -> None:
    # Given a message signed with its options and a delivery state (a retry's)
    original = record("replayed", options={"idempotency_key": "replayed-1", "retries": 1, "eta": 1})
    # When the attacker replays it with one option changed
    replay = {**original, "options": {**original["options"], **change}}
    publish(amqp_url, "maintenance", replay)
    # Then it is dead-lettered as tampered, and did not run
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert dead.headers["x-edujobs-reason"] == "bad_signature"
    assert ("state signature" in dead.headers["x-edujobs-error"]) == (where == "state")
    then_it_ran_only(amqp_url, redis_key, "canary")


def test_a_signed_message_as_it_was_signed_runs(worker: WorkerProcess, amqp_url: str, redis_key: str) -> None:
    # Given a message signed with a delivery state (so the state signature is checked too)
    publish(amqp_url, "maintenance", record("retried", options={"retries": 1, "eta": 1}))
    # Then it runs
    wait_until(lambda: recorded(redis_key) == ["retried"], what="the signed message running")


def test_a_delayed_message_stripped_of_its_state_stays_delayed(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # Given a message its sender delayed by an hour (eta, and not_before under the signature)
    due = int(time.time() * 1000) + 3_600_000
    delayed = record("later", options={"eta": due, "not_before": due})
    # When the attacker strips its delivery state and publishes it to the queue itself, to run it now
    options = {k: v for k, v in delayed["options"].items() if k not in ("eta", "state_signature")}
    publish(amqp_url, "maintenance", {**delayed, "options": options})
    # Then it does not run: it is parked until its time, signature intact
    wait_until(lambda: depth(amqp_url, "maintenance.park") == 1, what="the message parked")
    then_it_ran_only(amqp_url, redis_key, "canary")


def test_a_message_naming_another_queue_is_dead_lettered_and_the_worker_goes_on(
    worker: WorkerProcess, amqp_url: str, redis_key: str
) -> None:
    # Given signed messages whose queue_name is not the queue they were published to (one the
    # worker does not consume: Dramatiq's worker thread died on it with a KeyError)
    for queue_name in ("elsewhere", "notifications", "maintenance.XQ"):
        message = dramatiq_message("testing.record", queue_name, {"value": queue_name}, key=KEY)
        publish(amqp_url, "maintenance", message)
    # Then each is dead-lettered as such, and the worker (both its threads) keeps working
    dead = take(amqp_url, "maintenance.XQ", 3)
    assert {d.headers["x-edujobs-reason"] for d in dead} == {"wrong_queue"}
    for n in range(4):  # more messages than threads: a dead thread would leave some waiting
        publish(amqp_url, "maintenance", record(f"after-{n}"))
    wait_until(lambda: len(recorded(redis_key)) == 4, what="four messages after the bad ones")
    assert worker.process.poll() is None


def test_signing_refuses_to_sign_twice() -> None:
    # A worker or client never signs what is signed already (it would hide a tampered envelope).
    message = record("x")
    with pytest.raises(ValueError, match="signed already"):
        sign_message(KEY, message)
