"""Test event handlers for end-to-end tests: ``dramatiq tests.e2e.actors_events`` runs them beside the
real actors and handlers (``notifications.on_user_created`` among them).

Two more handlers of ``user.created``: one records each event it runs in the Redis list named by
``EDUJOBS_TEST_KEY``; the other fails every attempt (retried once, then dead-lettered), so that a
test sees that one handler's failures leave the others alone.
"""

from __future__ import annotations

import os

import redis

import actors  # noqa: F401  (sets up the broker from the environment and declares the real actors)
from actors.base import handler
from contracts.errors import TransientError
from contracts.events import Event, UserCreated

_redis = redis.Redis.from_url(os.environ.get("EDUJOBS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
_key = os.environ.get("EDUJOBS_TEST_KEY", "edujobs-test")


@handler(
    "testing.on_user_created", events=["user.created"], time_limit=10_000, max_backoff=200, max_retries=0
)
def record_user_created(event: Event[UserCreated]) -> None:
    _redis.rpush(_key, f"record:{event.name}:{event.id}:{event.payload.user_id}")


@handler(
    "testing.on_user_created_failing",
    events=["user.created"],
    time_limit=10_000,
    max_backoff=200,
    max_retries=1,
    min_backoff=100,
)
def fail_user_created(event: Event[UserCreated]) -> None:
    _redis.rpush(_key, f"fail:{event.id}")
    raise TransientError("the downstream service is down")
