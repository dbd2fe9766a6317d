"""Key rotation: a worker accepts the keys it is given besides its own, and signs with its own."""

from __future__ import annotations

from tests.amqp import dramatiq_message, publish, take
from tests.e2e.conftest import recorded
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"


def record(value: str, *, key: bytes) -> dict[str, object]:
    return dramatiq_message("testing.record", "maintenance", {"value": value}, key=key)


def test_a_message_signed_with_the_previous_key_runs_during_a_rotation(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given a worker mid-rotation: it signs with the new key and still accepts the old one
    env = {
        **edujobs_env,
        "EDUJOBS_TEST_KEY": redis_key,
        "EDUJOBS_SIGNING_KEY": "new-key",
        "EDUJOBS_ACCEPTED_SIGNING_KEYS": "test-signing-key",
    }
    worker = WorkerProcess(env, threads=2, module="tests.e2e.actors_testing").wait_ready()
    try:
        # When messages in flight were signed with the old key, new ones with the new key, and one
        # with a key it was never given
        publish(amqp_url, "maintenance", record("old-key", key=KEY))
        publish(amqp_url, "maintenance", record("new-key", key=b"new-key"))
        publish(amqp_url, "maintenance", record("stranger", key=b"some-other-key"))
        # Then the first two run, the third is dead-lettered
        wait_until(lambda: sorted(recorded(redis_key)) == ["new-key", "old-key"], what="both keys accepted")
        [dead] = take(amqp_url, "maintenance.XQ", 1)
        assert dead.headers["x-edujobs-reason"] == "bad_signature"
        assert dead.message()["kwargs"] == {"value": "stranger"}
    finally:
        worker.stop()


def test_a_retry_of_an_old_key_message_is_signed_anew_and_still_runs(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given a worker that signs with a new key and accepts the old one
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key, "EDUJOBS_SIGNING_KEY": "new-key",
           "EDUJOBS_ACCEPTED_SIGNING_KEYS": "test-signing-key"}  # fmt: skip
    worker = WorkerProcess(env, threads=2, module="tests.e2e.actors_testing").wait_ready()
    try:
        # When a message signed with the old key fails transiently twice, then is exhausted
        message = dramatiq_message("testing.fail_transiently", "maintenance", {}, key=KEY)
        publish(amqp_url, "maintenance", message)
        # Then every retry was accepted (its state signed by the worker's key, its sender signature
        # kept): three attempts, then a dead letter whose sender signature is the original one
        [dead] = take(amqp_url, "maintenance.XQ", 1)
        assert recorded(redis_key) == ["attempt"] * 3
        assert dead.headers["x-edujobs-reason"] == "retries_exhausted"
        assert dead.message()["options"]["signature"] == message["options"]["signature"]
    finally:
        worker.stop()
