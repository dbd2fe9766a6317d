"""The adversarial corpus: every message shape an attacker or a broken producer may publish, against
one real worker. Each must end in `.XQ` with a reason; the worker must stay whole (every thread
alive, its consumers working); nothing unsigned or altered may run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from brokers.dlq import REASONS
from tests.amqp import depth, dramatiq_message, publish, take
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"
QUEUE = "maintenance"


def signed(value: str, **options: Any) -> dict[str, Any]:
    return dramatiq_message("testing.record", QUEUE, {"value": value}, key=KEY, options=options)


def unsigned(value: str, **options: Any) -> dict[str, Any]:
    return dramatiq_message("testing.record", QUEUE, {"value": value}, key=None, options=options)


def altered(change: Callable[[dict[str, Any]], None], **options: Any) -> dict[str, Any]:
    message = signed("altered", **options)
    change(message)
    return message


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def far() -> int:
    return int(time.time() * 1000) + 86_400_000


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    reasons: frozenset[str]
    queue: str = QUEUE


def case(name: str, make: Callable[[], bytes], *reasons: str, queue: str = QUEUE) -> Case:
    return Case(name, make, frozenset(reasons), queue)


def change(message: dict[str, Any], **options: Any) -> dict[str, Any]:
    message["options"].update(options)
    return message


CORPUS = [
    case("unsigned", lambda: body(unsigned("x")), "bad_signature"),
    case("unsigned, eta 0 on the queue", lambda: body(unsigned("x", eta=0)), "bad_signature"),
    case(
        "unsigned, eta 0 on the delay queue",
        lambda: body({**unsigned("x", eta=0), "queue_name": QUEUE + ".DQ"}),
        "bad_signature",
        queue=QUEUE + ".DQ",
    ),
    case("unsigned, a day ahead", lambda: body(unsigned("x", eta=far())), "bad_signature"),
    case(
        "signed with another key",
        lambda: body(dramatiq_message("testing.record", QUEUE, {"value": "x"}, key=b"other")),
        "bad_signature",
    ),
    case("arguments changed", lambda: body({**signed("x"), "kwargs": {"value": "evil"}}), "bad_signature"),
    case(
        "idempotency key changed",
        lambda: body(change(signed("x", idempotency_key="1"), idempotency_key="2")),
        "bad_signature",
    ),
    case(
        "priority raised",
        lambda: body(
            change(
                signed("x", priority_name="low", broker_priority=3),
                priority_name="critical",
                broker_priority=9,
            )
        ),
        "bad_signature",
    ),
    case("retries reset", lambda: body(change(signed("x", retries=3, eta=1), retries=0)), "bad_signature"),
    case(
        "state signature removed",
        lambda: body(altered(lambda m: m["options"].pop("state_signature"), eta=1)),
        "bad_signature",
    ),
    case(
        "unsigned pipe_target",
        lambda: body(change(signed("x"), pipe_target=signed("piped"))),
        "invalid_options",
    ),
    case("on_success", lambda: body(change(signed("x"), on_success="testing.record")), "invalid_options"),
    case("throws as a list", lambda: body(change(signed("x"), throws=["Exception"])), "invalid_options"),
    case(
        "a forged dead-letter record",
        lambda: body(change(signed("x"), dead_letter={"reason": 7, "attempts": "x"})),
        "invalid_options",
    ),
    case("eta of the wrong type", lambda: body(change(signed("x"), eta="soon")), "invalid_options"),
    case("max_retries as text", lambda: body(change(signed("x"), max_retries="9")), "invalid_options"),
    case(
        "a queue the worker does not consume",
        lambda: body(dramatiq_message("testing.record", "elsewhere", {"value": "x"}, key=KEY)),
        "wrong_queue",
    ),
    case(
        "the dead-letter queue named",
        lambda: body(dramatiq_message("testing.record", QUEUE + ".XQ", {"value": "x"}, key=KEY)),
        "wrong_queue",
    ),
    case(
        "an actor nobody declared",
        lambda: body(dramatiq_message("testing.nobody", QUEUE, {}, key=KEY)),
        "unknown_actor",
    ),
    case("not JSON", lambda: b"\x00\xff not json \xfe", "undecodable"),
    case("empty", lambda: b"", "undecodable"),
    case("a JSON array", lambda: b"[1, 2, 3]", "undecodable"),
    case("JSON 2,000 levels deep", lambda: b"[" * 2_000 + b"]" * 2_000, "undecodable"),
    case("options a list", lambda: body({**signed("x"), "options": []}), "undecodable"),
    case("actor_name a number", lambda: body({**signed("x"), "actor_name": 7}), "undecodable"),
    case("args an object", lambda: body({**signed("x"), "args": {}}), "undecodable"),
    case(
        "no message_id",
        lambda: body({k: v for k, v in signed("x").items() if k != "message_id"}),
        "undecodable",
    ),
    case("timestamp as text", lambda: body({**signed("x"), "message_timestamp": "now"}), "undecodable"),
    case("an extra field", lambda: body({**signed("x"), "extra": 1}), "undecodable"),
    case(
        "NaN in the arguments",
        lambda: json.dumps({**unsigned("x"), "kwargs": {"value": float("nan")}}).encode(),
        "bad_signature",
    ),
    case(
        "an integer past 2^53", lambda: body({**unsigned("x"), "kwargs": {"value": 2**60}}), "bad_signature"
    ),
    case(
        "kwargs 600 levels deep",
        lambda: body({**unsigned("x"), "kwargs": {"value": json.loads("[" * 600 + "]" * 600)}}),
        "bad_signature",
    ),
    case("over the size limit", lambda: body(signed("x" * 5000)), "payload_too_large"),
]


def test_every_shape_of_the_corpus_is_dead_lettered_with_a_reason_and_the_worker_stays_whole(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    env = {**edujobs_env, "EDUJOBS_TEST_KEY": redis_key, "EDUJOBS_MAX_PAYLOAD_BYTES": "4096"}
    worker = WorkerProcess(env, threads=2, module="tests.e2e.actors_testing").wait_ready()
    try:
        # Given the whole corpus published straight to RabbitMQ
        sent = [(item, item.make()) for item in CORPUS]
        for item, data in sent:
            publish(amqp_url, item.queue, data)
        # Then every message is in maintenance.XQ with one of the reasons expected of it
        dead = take(amqp_url, QUEUE + ".XQ", len(CORPUS), timeout=60)
        by_body = {d.body: d.headers["x-edujobs-reason"] for d in dead}
        for item, data in sent:
            found = by_body.get(data)
            if found is None:  # a message dead-lettered after decoding carries its record inside
                found = next((r for b, r in by_body.items() if _same_message(b, data)), None)
            assert found in item.reasons, (
                f"{item.name}: dead-lettered as {found!r}, expected {set(item.reasons)}"
            )
            assert found in REASONS
        # And nothing else is left anywhere: not parked, not delayed, not waiting
        for suffix in ("", ".DQ", ".park"):
            assert depth(amqp_url, QUEUE + suffix) == 0, suffix
        # And nothing of it ran, while the worker, both its threads, still runs what is signed
        for n in range(4):
            publish(amqp_url, QUEUE, signed(f"canary-{n}"))
        wait_until(lambda: redis.Redis().llen(redis_key) == 4, what="the canaries after the corpus")
        ran = sorted(v.decode() for v in redis.Redis().lrange(redis_key, 0, -1))
        assert ran == [f"canary-{n}" for n in range(4)]
        assert worker.process.poll() is None
        log = worker.output()
        assert "Exception in thread" not in log and "Consumer encountered an unexpected error" not in log
    finally:
        worker.stop()


def _same_message(dead_body: bytes, sent_body: bytes) -> bool:
    try:
        dead, sent = json.loads(dead_body), json.loads(sent_body)
    except ValueError:
        return False
    if not isinstance(dead, dict) or not isinstance(sent, dict):
        return False
    return bool(dead.get("message_id") == sent.get("message_id"))
