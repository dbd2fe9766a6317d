"""Domain events on the real RabbitMQ and PostgreSQL: the exchange, handler queues and bindings as
declared, and publishing through the client and the HTTP API (``POST /v1/events``, scoped, audited)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from brokers.client import Client
from brokers.queue_stats import QueueStatsCollector, QueueStatsReader
from brokers.settings import Settings
from brokers.stack import build_broker
from brokers.topology import ALL_QUEUES, DOMAIN_QUEUES
from contracts.events import EVENTS_EXCHANGE, UNROUTED_QUEUE, handler_queues
from contracts.priorities import MAX_PRIORITY
from ops.api import create_app
from store import audit, tokens
from tests.amqp import depth, take
from tests.integration.test_dlq import engine  # noqa: F401  (fixture)
from tests.services import management_get
from tests.worker import wait_until

KEY = b"test-signing-key"
MANAGEMENT = "http://guest:guest@127.0.0.1:15672"


def _vhost(url: str) -> str:
    return urllib.parse.quote(urllib.parse.unquote(url.rsplit("/", 1)[1]), safe="")


@pytest.fixture
def topology(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("EDUJOBS_SIGNING_KEY", KEY.decode())
    broker = build_broker(Settings(rabbitmq_url=amqp_url, dead_letter_ttl_days=3))
    broker.declare_topology(DOMAIN_QUEUES + handler_queues())
    broker.close()
    return amqp_url


def test_each_handler_has_a_queue_like_a_domain_bound_to_its_events(topology: str) -> None:
    vhost = _vhost(topology)
    # Then edujobs.events is a durable topic exchange whose unroutable events go to events.unrouted
    exchange = management_get(f"/api/exchanges/{vhost}/{EVENTS_EXCHANGE}")
    assert (exchange["type"], exchange["durable"]) == ("topic", True)
    assert exchange["arguments"]["alternate-exchange"] == "edujobs.events.unrouted"
    # ...each handler's queue is bound to exactly its events...
    bindings = management_get(f"/api/exchanges/{vhost}/{EVENTS_EXCHANGE}/bindings/source")
    bound = sorted((b["destination"], b["routing_key"]) for b in bindings)
    assert ("notifications.on_user_created", "user.created") in bound
    assert ("notifications.on_iep_created", "iep.created") in bound
    assert ("academics.on_grade_updated", "grade.updated") in bound
    assert len({d for d, _ in bound}) == len(handler_queues())
    # ...and has the companions and arguments of a domain queue (priority, delays, dead letters)
    queues = {q["name"]: q for q in management_get(f"/api/queues/{vhost}")}
    for handler in handler_queues():
        main, delayed, dead = queues[handler], queues[f"{handler}.DQ"], queues[f"{handler}.XQ"]
        assert main["durable"] and main["arguments"]["x-max-priority"] == MAX_PRIORITY
        assert main["arguments"]["x-dead-letter-routing-key"] == f"{handler}.XQ"
        assert delayed["arguments"]["x-max-priority"] == MAX_PRIORITY
        assert dead["arguments"]["x-message-ttl"] == 3 * 86_400_000
        assert queues[f"{handler}.park"]["arguments"]["x-dead-letter-routing-key"] == f"{handler}.DQ"
    assert queues[UNROUTED_QUEUE]["durable"]
    # ...and the pools' metrics report the handler queues beside the domains'
    collector = QueueStatsCollector(
        QueueStatsReader(management_url=MANAGEMENT, vhost=urllib.parse.unquote(vhost))
    )

    def reported() -> set[str]:
        depths = next(m for m in collector.collect() if m.name == "edujobs_queue_messages")
        return {sample.labels["queue"] for sample in depths.samples}

    # (RabbitMQ has a new queue's figures after its statistics interval)
    wait_until(lambda: set(ALL_QUEUES) <= reported(), what="every queue's depth in the metrics")
    assert "notifications.on_user_created" in reported()


def test_one_published_event_lands_once_in_every_bound_handler_queue(topology: str) -> None:
    client = Client(topology, signing_key=KEY)
    try:
        event_id = client.publish_event("user.created", {"user_id": 7})
    finally:
        client.close()
    [copy] = take(topology, "notifications.on_user_created", 1)
    body = copy.message()
    assert (body["message_id"], body["actor_name"], body["queue_name"]) == (
        event_id,
        "user.created",
        EVENTS_EXCHANGE,
    )
    assert body["options"]["event_id"] == event_id and "signature" in body["options"]
    assert depth(topology, "notifications.on_iep_created") == 0
    assert depth(topology, UNROUTED_QUEUE) == 0


@pytest.fixture
def api(topology: str, engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    client = Client(topology, signing_key=KEY)
    with TestClient(create_app(rabbitmq_url=topology, engine=engine, client=client)) as http:
        yield http
    client.close()


def bearer(engine: Engine, name: str, *scopes: str) -> dict[str, str]:  # noqa: F811
    token = tokens.create(engine, name=name, scopes=list(scopes), created_by="test")
    return {"Authorization": f"Bearer {token}"}


WELCOME = {"event": "user.created", "payload": {"user_id": 7}}


def test_publishing_an_event_over_http_needs_its_scope_and_is_audited(
    api: TestClient,
    engine: Engine,  # noqa: F811
    topology: str,
) -> None:
    # A token without an events scope (or with another event's) is refused; nothing is published
    assert api.post("/v1/events", json=WELCOME).status_code == 401
    assert api.post("/v1/events", json=WELCOME, headers=bearer(engine, "q", "enqueue:*")).status_code == 403
    other = bearer(engine, "ieps", "events:publish:iep.created")
    assert api.post("/v1/events", json=WELCOME, headers=other).status_code == 403
    assert depth(topology, "notifications.on_user_created") == 0
    # An event's own scope publishes it: 202 with its id and handlers, confirmed by RabbitMQ
    sso = bearer(engine, "sso", "events:publish:user.created")
    response = api.post("/v1/events", json={**WELCOME, "event_id": "evt-1"}, headers=sso)
    assert response.status_code == 202
    assert response.json() == {
        "event_id": "evt-1",
        "event": "user.created",
        "handlers": ["notifications.on_user_created"],
    }
    [copy] = take(topology, "notifications.on_user_created", 1)
    assert copy.message()["options"]["event_id"] == "evt-1"
    [entry] = audit.recent(engine, action="events.publish")
    assert (entry.actor, entry.target, entry.details) == ("token:sso", "user.created", {"event_id": "evt-1"})
    # events:publish publishes any event; an invalid payload or unknown event is 422, naming why
    anything = bearer(engine, "lms", "events:publish")
    bad = api.post("/v1/events", json={"event": "iep.created", "payload": {"iep_id": "x"}}, headers=anything)
    assert bad.status_code == 422 and "iep_id" in bad.text and "user_id" in bad.text
    unknown = api.post("/v1/events", json={"event": "user.deleted", "payload": {}}, headers=anything)
    assert unknown.status_code == 422 and "user.created" in unknown.text
    assert depth(topology, "notifications.on_iep_created") == 0
    ok = api.post(
        "/v1/events", json={"event": "iep.created", "payload": {"iep_id": 1, "user_id": 2}}, headers=anything
    )
    assert ok.status_code == 202
    assert depth(topology, "notifications.on_iep_created") == 1


def test_edujobs_events_lists_handlers_bindings_backlog_and_unrouted_and_health_says_why(
    edujobs_env: dict[str, str],
) -> None:
    import json

    from typer.testing import CliRunner

    from ops.cli import app
    from tests.amqp import publish

    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    # Before anything is declared, health says the exchange is missing and what to run
    checks = json.loads(CliRunner().invoke(app, ["health", "--workers", "--json"]).stdout)
    assert "edujobs queues declare" in checks["events"]
    # Given the topology declared, one user.created waiting for its handler, one event nobody handles
    broker = build_broker(Settings(rabbitmq_url=url))
    broker.declare_topology(ALL_QUEUES)
    broker.close()
    client = Client(url, signing_key=KEY)
    try:
        client.publish_event("user.created", {"user_id": 7})
    finally:
        client.close()
    publish(url, "course.archived", {"not": "handled"}, exchange=EVENTS_EXCHANGE)

    # When an operator runs edujobs events (RabbitMQ's figures lag by its statistics interval)
    def view() -> dict[str, Any]:
        result = CliRunner().invoke(app, ["events", "--json"])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    def welcome() -> dict[str, Any]:
        by_event = {e["event"]: e["handlers"] for e in view()["events"]}
        [handler] = by_event["user.created"]
        return dict(handler)

    def settled() -> bool:
        handler = welcome()
        # (each figure appears once RabbitMQ has emitted that queue's stats: None until then)
        figures = (handler["ready"], handler["consumers"], handler["dead"])
        return None not in figures and handler["ready"] == 1 and view()["unrouted"] == 1

    wait_until(settled, what="the figures of both events")
    # Then each event shows its handlers, bound, with their backlog, and the unrouted count
    assert welcome()["handler"] == "notifications.on_user_created"
    assert (welcome()["bound"], welcome()["consumers"], welcome()["dead"]) == (True, 0, 0)
    assert view()["bindings"]["notifications.on_iep_created"] == ["iep.created"]
    assert view()["exchange"] is True
    # And health names the unrouted event and the handler queues without a worker
    checks = json.loads(CliRunner().invoke(app, ["health", "--workers", "--json"]).stdout)
    assert "1 events no handler was bound to wait in events.unrouted" in checks["events"]
    assert "notifications.on_user_created" in checks["workers"]
    table = CliRunner().invoke(app, ["events"])
    assert table.exit_code == 0 and "no handler bound): 1" in table.stdout
