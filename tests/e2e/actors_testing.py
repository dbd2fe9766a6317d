"""Test actors for end-to-end tests: ``dramatiq tests.e2e.actors_testing`` runs them beside the real ones.

They record what they do in a Redis list named by ``EDUJOBS_TEST_KEY`` so the test can see it.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis

import actors  # noqa: F401  (sets up the broker from the environment and declares the real actors)
from contracts.errors import PermanentError, TransientError

_redis = redis.Redis.from_url(os.environ.get("EDUJOBS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
_key = os.environ.get("EDUJOBS_TEST_KEY", "edujobs-test")


@dramatiq.actor(queue_name="maintenance", actor_name="testing.record", max_retries=0, time_limit=30_000)
def record(value: str, sleep: float = 0.0) -> None:
    time.sleep(sleep)
    _redis.rpush(_key, value)


@dramatiq.actor(queue_name="maintenance", actor_name="testing.fail_permanently", time_limit=10_000)
def fail_permanently(user_id: int) -> None:
    _redis.rpush(_key, "attempt")
    raise PermanentError(f"user {user_id} does not exist")


@dramatiq.actor(
    queue_name="maintenance",
    actor_name="testing.fail_transiently",
    max_retries=2,
    min_backoff=100,
    max_backoff=200,
    time_limit=10_000,
)
def fail_transiently() -> None:
    _redis.rpush(_key, "attempt")
    raise TransientError("the provider is down")


@dramatiq.actor(
    queue_name="maintenance",
    actor_name="testing.slow",
    max_retries=0,
    time_limit=120_000,
    notify_shutdown=True,
)
def slow(value: str, seconds: float) -> None:
    """Records ``start:<value>``, works ``seconds`` (in short steps, so that the worker's shutdown
    can interrupt it), then records ``end:<value>``."""
    _redis.rpush(_key, f"start:{value}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _redis.rpush(_key, f"end:{value}")
