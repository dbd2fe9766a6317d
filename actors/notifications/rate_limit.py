"""The bulk email rate limit, shared by every worker process when Redis is configured.

``EDUJOBS_SENDGRID_BULK_RATE`` is a limit on SendGrid requests per second for the whole deployment,
not per process: with Redis (``EDUJOBS_REDIS_URL``) the token bucket lives in Redis and every
worker draws from it; without Redis (or while Redis is down) each process paces itself with an
in-process ``TokenBucket`` (so N processes may together send N times the rate).

The Redis bucket is the same reservation scheme as the in-process one: one Lua script, run
atomically on Redis's own clock, refills the bucket, takes a token (the count may go negative: a
reservation) and answers how long the caller must sleep before its request. Callers sleep outside
Redis, so a waiting worker holds no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from actors.notifications.bulk import Bucket, TokenBucket

logger = logging.getLogger(__name__)

DEFAULT_KEY = "edujobs:rate:sendgrid_bulk"
REDIS_RETRY_SECONDS = 30

_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
local wait = 0
if tokens < 0 then wait = -tokens / rate end
redis.call('EXPIRE', KEYS[1], math.ceil(wait + burst / rate) + 60)
return tostring(wait)
"""


class RedisTokenBucket:
    """At most ``rate`` acquisitions per second across every process sharing ``key`` in Redis,
    bursts of up to ``burst``; ``fallback`` paces this process alone while Redis cannot be reached."""

    def __init__(self, client: redis.Redis[bytes], key: str, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.client, self.key, self.rate, self.burst = client, key, rate, burst
        self._take = client.register_script(_TAKE)
        self.fallback = TokenBucket(rate, burst)
        self._redis_again_at = 0.0  # after a failure, Redis is left alone for a while

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Take one token, sleeping until it is due; return the seconds slept."""
        if time.monotonic() < self._redis_again_at:
            return self.fallback.acquire(sleep)
        try:
            wait = float(self._take(keys=[self.key], args=[self.rate, self.burst]))
        except redis.RedisError as e:
            # Not once per request: a Redis that hangs would add its timeout to every send.
            self._redis_again_at = time.monotonic() + REDIS_RETRY_SECONDS
            logger.warning("Bulk rate limit: Redis unavailable (%s); pacing this process alone for %d s.",
                           e, REDIS_RETRY_SECONDS)  # fmt: skip
            return self.fallback.acquire(sleep)
        if wait:
            sleep(wait)
        return wait


def bulk_bucket(rate: float, redis_url: str | None, key: str = DEFAULT_KEY) -> Bucket:
    """The shared bucket if Redis is configured, else an in-process one."""
    if not redis_url:
        return TokenBucket(rate)
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisTokenBucket(client, key, rate)
