"""What the no-op benchmark actors share: their one Redis INCR, and the environment variables
through which the benchmark configures the worker subprocesses.

Each run counts on its own key (``BENCH_REDIS_KEY``); the plain-Dramatiq worker reads its broker
URL from ``BENCH_RABBITMQ_URL`` (the edujobs one reads ``EDUJOBS_RABBITMQ_URL`` through settings).
"""

from __future__ import annotations

import os

import redis

REDIS_URL_ENV = "BENCH_REDIS_URL"
REDIS_KEY_ENV = "BENCH_REDIS_KEY"
RABBITMQ_URL_ENV = "BENCH_RABBITMQ_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: The queues' ``x-max-priority``, as edujobs declares its own.
MAX_PRIORITY = 9

QUEUE = "bench"
ACTOR = "bench.noop"

_redis = redis.Redis.from_url(os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL))
_key = os.environ.get(REDIS_KEY_ENV, "edujobs-bench")


def increment() -> None:
    _redis.incr(_key)
