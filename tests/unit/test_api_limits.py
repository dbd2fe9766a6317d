"""The HTTP API's request size and rate limits (ops.limits)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from ops.limits import BodyLimit, RateLimit, TokenBuckets

VALID_TOKENS = {"alice-token": "1", "bob-token": "2"}


def echo_app(*, max_bytes: int = 100, rate: float = 1.0, burst: int = 2) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RateLimit, rate=rate, burst=burst, identify=VALID_TOKENS.get)
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    return app


def test_a_body_over_the_limit_is_refused_with_413_and_one_under_it_passes() -> None:
    client = TestClient(echo_app(max_bytes=100, rate=0))
    assert client.post("/echo", content=b"x" * 100).json() == {"received": 100}
    refused = client.post("/echo", content=b"x" * 101)
    assert refused.status_code == 413
    assert "100-byte limit" in refused.json()["detail"]


def test_a_streamed_body_that_grows_past_the_limit_is_refused() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"y" * 40

    # No Content-Length: the body arrives in chunks and is counted as it comes
    refused = TestClient(echo_app(max_bytes=100, rate=0)).post("/echo", content=chunks())
    assert refused.status_code == 413


def test_a_caller_past_its_burst_gets_429_with_retry_after_and_others_are_not_affected() -> None:
    client = TestClient(echo_app(rate=0.5, burst=2))
    alice = {"Authorization": "Bearer alice-token"}
    assert [client.post("/echo", headers=alice).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/echo", headers=alice)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    # Another valid token has its own bucket; health probes are never limited
    assert client.post("/echo", headers={"Authorization": "Bearer bob-token"}).status_code == 200
    assert all(client.get("/healthz", headers=alice).status_code == 200 for _ in range(5))


def test_made_up_tokens_share_their_address_bucket() -> None:
    # Given a valid token already seen, and a caller that sends a new made-up token with every request
    client = TestClient(echo_app(rate=0.5, burst=3))
    assert client.post("/echo", headers={"Authorization": "Bearer alice-token"}).status_code == 200
    statuses = [
        client.post("/echo", headers={"Authorization": f"Bearer fake-{n}"}).status_code for n in range(3)
    ]
    # Then they all count against its address (which paid for alice's first look-up too)
    assert statuses == [200, 200, 429]
    # And so do requests without a token, while the known valid token keeps its own bucket
    assert client.post("/echo").status_code == 429
    assert client.post("/echo", headers={"Authorization": "Bearer alice-token"}).status_code == 200


def test_a_made_up_token_is_not_looked_up_once_its_address_is_over_its_rate() -> None:
    # Given an API whose token look-ups (a database query each) are counted
    looked_up: list[str] = []

    def identify(token: str) -> str | None:
        looked_up.append(token)
        return VALID_TOKENS.get(token)

    app = FastAPI()

    @app.get("/v1/x")
    def x() -> dict[str, str]:
        return {}

    app.add_middleware(RateLimit, rate=0.5, burst=3, identify=identify)
    client = TestClient(app)
    # When one address sends 20 requests, each with a new made-up token
    statuses = [
        client.get("/v1/x", headers={"Authorization": f"Bearer fake-{n}"}).status_code for n in range(20)
    ]
    # Then only the first 3 (its burst) were looked up; the rest were refused before any look-up
    assert statuses == [200] * 3 + [429] * 17
    assert looked_up == ["fake-0", "fake-1", "fake-2"]


def test_readiness_probes_are_limited_by_address_in_their_own_buckets() -> None:
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {}

    @app.get("/v1/x")
    def x() -> dict[str, str]:
        return {}

    app.add_middleware(RateLimit, rate=0.5, burst=2, identify=VALID_TOKENS.get)
    client = TestClient(app)
    # A flood of /readyz is refused past its burst...
    assert [client.get("/readyz").status_code for _ in range(3)] == [200, 200, 429]
    # ...without touching the address's other requests, and the reverse
    assert [client.get("/v1/x").status_code for _ in range(3)] == [200, 200, 429]


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=1, clock=lambda: now[0])
    assert buckets.take("k") == 0
    assert buckets.take("k") == 0.5
    now[0] = 0.5
    assert buckets.take("k") == 0


def test_buckets_forget_the_least_recently_used_callers_past_their_maximum() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=lambda: 0.0)
    for key in ("a", "b", "c"):
        buckets.take(key)
    # "a" was dropped: it starts again with a full bucket
    assert buckets.take("a") == 0
    assert buckets.take("c") > 0
