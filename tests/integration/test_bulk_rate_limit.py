"""The bulk email rate limit on the real Redis: two workers drawing from one bucket get the rate
between them, not each; with Redis unreachable each paces itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from actors.notifications.bulk import TokenBucket
from actors.notifications.rate_limit import RedisTokenBucket, bulk_bucket
from tests.services import require, unique

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def key() -> Iterator[str]:
    require("Redis", "127.0.0.1", 6379)
    name = unique("edujobs-test-bulk-rate")
    yield name
    redis.Redis.from_url(REDIS_URL).delete(name)


def test_two_workers_share_one_rate(key: str) -> None:
    # Given two worker processes' buckets on the same Redis key, 10 requests per second in all
    workers = [bulk_bucket(10, REDIS_URL, key=key) for _ in range(2)]
    assert all(isinstance(w, RedisTokenBucket) for w in workers)
    # When they take 20 tokens between them as fast as they can (sleeps recorded, not slept)
    waits = [workers[n % 2].acquire(sleep=lambda _s: None) for n in range(20)]
    # Then the 20th request is due about 1.9 s after the first: the pair is held to 10/s together
    # (two separate in-process buckets would let both through in 0.9 s)
    assert waits[0] == 0
    assert 1.7 < waits[-1] <= 1.9
    assert waits == sorted(waits)


def test_without_redis_each_process_paces_itself() -> None:
    assert isinstance(bulk_bucket(10, None), TokenBucket)
    unreachable = bulk_bucket(10, "redis://127.0.0.1:9/0", key="unused")
    slept: list[float] = []
    waits = [unreachable.acquire(sleep=slept.append) for _ in range(3)]
    # Then it paces this process alone, at the rate, and the caller really sleeps
    assert waits[0] == 0 and slept == waits[1:]
    assert 0.05 < waits[1] <= 0.1 and 0.15 < waits[2] <= 0.2
