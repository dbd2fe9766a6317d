"""Who gets in, and at what cost, on the real RabbitMQ and PostgreSQL: ``/readyz`` opens at most one
RabbitMQ connection per few seconds however often it is asked, and is rate-limited per address;
made-up tokens are refused by the rate limit before they cost database look-ups; a refused token is
audited (bounded, never in clear)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from brokers.client import Client
from ops.api import create_app
from store import audit, tokens
from tests.integration.test_circuit_breakers import CuttableProxy
from tests.integration.test_dlq import engine, topology  # noqa: F401  (fixtures)

KEY = b"test-signing-key"


@pytest.fixture
def client(topology: str) -> Iterator[Client]:  # noqa: F811
    producer = Client(topology, signing_key=KEY)
    yield producer
    producer.close()


def through(forwarder: CuttableProxy, url: str) -> str:
    """``url`` (amqp://...) pointed at ``forwarder`` instead of the server."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{forwarder.port}").geturl()


def test_readyz_opens_one_rabbitmq_connection_for_many_calls_and_is_rate_limited(
    topology: str,  # noqa: F811
    engine: Engine,  # noqa: F811
    client: Client,
) -> None:
    # Given the API reaching RabbitMQ through a forwarder that counts connections
    forwarder = CuttableProxy(("127.0.0.1", 5672))
    app = create_app(
        rabbitmq_url=through(forwarder, topology), engine=engine, client=client, rate_limit=0.1, rate_burst=20
    )
    try:
        with TestClient(app) as api:
            # When a probe loop asks /readyz 20 times in a row
            answers = [api.get("/readyz") for _ in range(20)]
            # Then every answer is ready, and RabbitMQ saw one connection (the answer is kept a while)
            assert {a.status_code for a in answers} == {200}
            assert answers[-1].json() == {"rabbitmq": "ok", "database": "ok"}
            assert forwarder.accepted == 1
            # And past its burst, the address is refused before anything is checked
            assert api.get("/readyz").status_code == 429
    finally:
        forwarder.close()


def test_made_up_tokens_cost_no_database_lookup_past_the_address_rate(
    topology: str,  # noqa: F811
    engine: Engine,  # noqa: F811
    client: Client,
) -> None:
    # Given the API, with every query on the tokens' table counted
    lookups = []

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "api_tokens" in statement:
            lookups.append(statement)

    app = create_app(rabbitmq_url=topology, engine=engine, client=client, rate_limit=0.1, rate_burst=5)
    with TestClient(app) as api:
        # When one address sends 30 requests, each with a new made-up token
        statuses = [
            api.get("/v1/dlq", headers={"Authorization": f"Bearer ej_made_up_{n}"}).status_code
            for n in range(30)
        ]
    # Then the first 5 are refused as unknown tokens and the rest by the rate limit, and only the
    # first 5 were looked up (the rate limit's look-up and authentication's: two each)
    assert statuses == [401] * 5 + [429] * 25
    assert len(lookups) <= 10


def test_a_refused_token_is_audited_a_bounded_number_of_times_and_never_in_clear(
    topology: str,  # noqa: F811
    engine: Engine,  # noqa: F811
    client: Client,
) -> None:
    app = create_app(rabbitmq_url=topology, engine=engine, client=client, rate_limit=0)
    with TestClient(app) as api:
        # When a caller tries 20 made-up tokens, and once no token at all
        made_up = [f"ej_guess_{n:04d}_secret" for n in range(20)]
        for token in made_up:
            assert api.get("/v1/dlq", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert api.get("/v1/dlq").status_code == 401
    # Then the first attempts are in the audit log with where they came from, bounded per address
    entries = audit.recent(engine, action="auth.failed")
    assert 1 <= len(entries) <= 5
    first = entries[-1]
    assert first.actor == "addr:testclient" and first.target == "GET /v1/dlq"
    assert first.details["reason"] == "unknown or revoked token" and len(first.details["token_sha256"]) == 12
    # And no token appears in clear anywhere in the log
    logged = json.dumps([(e.actor, e.target, e.details) for e in audit.recent(engine, 500)])
    assert not any(token in logged or token[3:] in logged for token in made_up)
    # A valid token is not audited
    valid = tokens.create(engine, name="dash", scopes=["ops:read"], created_by="test")
    with TestClient(app) as api:
        assert api.get("/v1/dlq", headers={"Authorization": f"Bearer {valid}"}).status_code == 200
    assert len(audit.recent(engine, action="auth.failed")) == len(entries)
