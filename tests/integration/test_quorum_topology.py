"""EDUJOBS_QUEUE_TYPE=quorum: work and delay queues are quorum queues (no ``x-max-priority``, which
RabbitMQ refuses on them before 4.0), and a worker processes messages from them as from classic ones.
The 3-node cluster test (``make test-cluster``) stops a node under them."""

from __future__ import annotations

import urllib.parse

import pytest

from brokers.rabbitmq import TopologyError
from brokers.settings import Settings, load_settings
from brokers.stack import build_broker
from brokers.topology import DOMAIN_QUEUES
from contracts.errors import ConfigurationError
from contracts.priorities import MAX_PRIORITY
from tests.services import management_get


def vhost_of(url: str) -> str:
    return urllib.parse.quote(urllib.parse.unquote(url.rsplit("/", 1)[1]), safe="")


def test_quorum_queues_are_declared_without_priority_and_dead_letter_to_a_classic_xq(amqp_url: str) -> None:
    broker = build_broker(Settings(rabbitmq_url=amqp_url, queue_type="quorum"))
    broker.declare_topology(DOMAIN_QUEUES)
    broker.close()
    queues = {q["name"]: q for q in management_get(f"/api/queues/{vhost_of(amqp_url)}")}
    for domain in DOMAIN_QUEUES:
        for name in (domain, domain + ".DQ"):
            assert queues[name]["type"] == "quorum", name
            assert "x-max-priority" not in queues[name]["arguments"], name
            assert queues[name]["arguments"]["x-dead-letter-routing-key"] == f"{domain}.XQ"
        assert queues[domain + ".XQ"]["type"] == "classic"
        assert queues[domain + ".park"]["type"] == "quorum"


def test_a_classic_topology_refuses_to_become_quorum_in_place(amqp_url: str) -> None:
    classic = build_broker(Settings(rabbitmq_url=amqp_url))
    classic.declare_topology(("media",))
    classic.close()
    quorum = build_broker(Settings(rabbitmq_url=amqp_url, queue_type="quorum"))
    with pytest.raises(TopologyError, match="media"):
        quorum.declare_topology(("media",))
    quorum.close()
    assert {q["name"]: q for q in management_get(f"/api/queues/{vhost_of(amqp_url)}")}["media"]["arguments"][
        "x-max-priority"
    ] == MAX_PRIORITY


def test_an_unknown_queue_type_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDUJOBS_QUEUE_TYPE", "stream")
    with pytest.raises(ConfigurationError, match="EDUJOBS_QUEUE_TYPE"):
        load_settings()
