"""Schemathesis against the API's OpenAPI spec: generated requests, valid and not, never get a server error.

Each operation is called with a token holding every scope, so that requests reach the handlers (and
RabbitMQ, the database) instead of stopping at 401. A 503 would only mean a dependency is down; here
they are all up, so any 5xx is a bug.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import Engine

from brokers.client import Client
from ops.api import create_app
from store import tokens
from tests.integration.test_dlq import dead_letter, engine, topology  # noqa: F401  (fixtures)

KEY = b"test-signing-key"
MANAGEMENT = "http://guest:guest@127.0.0.1:15672"
#: Generated requests per operation (about 20 operations).
EXAMPLES = 25


def test_no_generated_request_gets_a_server_error(topology: str, engine: Engine) -> None:  # noqa: F811
    # Given the API, a dead letter to review and a token with every scope
    client = Client(topology, signing_key=KEY)
    dead_letter(topology, "testing.record", {"value": "x"})
    app = create_app(
        rabbitmq_url=topology, engine=engine, client=client, management_url=MANAGEMENT, rate_limit=0
    )
    token = tokens.create(engine, name="fuzz", scopes=["enqueue:*", "ops:write"], created_by="test")
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15
    called: list[str] = []
    # When schemathesis generates requests for every operation, valid and invalid ones
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: schemathesis.Case[Any]) -> None:
            # Then none gets a 5xx
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        call()
        called.append(operation.label)
    client.close()
    assert "POST /v1/messages" in called and "POST /v1/dlq/{queue}/requeue" in called
