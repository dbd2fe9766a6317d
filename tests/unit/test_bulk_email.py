"""Bulk email's pieces as plain functions: the token bucket's pacing and the batches' shape."""

from __future__ import annotations

from actors.notifications.bulk import TokenBucket, batches_of
from actors.notifications.providers.sendgrid import MAX_PERSONALIZATIONS


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_bucket_paces_requests_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, clock=clock)
    # When ten requests are made as fast as possible
    for _ in range(10):
        bucket.acquire(sleep=clock.sleep)
    # Then they took nine intervals of 1/5 s (the first one went at once)
    assert abs(clock.now - 9 / 5) < 1e-9


def test_an_idle_bucket_allows_a_burst_no_larger_than_its_size() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=3, clock=clock)
    clock.now = 100.0  # idle for a long time
    slept = [bucket.acquire(sleep=clock.sleep) for _ in range(4)]
    assert slept == [0.0, 0.0, 0.0, 1.0]


def test_batches_cover_each_id_once_in_a_stable_order() -> None:
    ids = [*range(2500, 0, -1), 7, 7]
    batches = batches_of(ids)
    assert [len(b) for b in batches] == [MAX_PERSONALIZATIONS, MAX_PERSONALIZATIONS, 500]
    assert batches[0][:3] == [1, 2, 3] and [i for b in batches for i in b] == sorted(set(ids))
