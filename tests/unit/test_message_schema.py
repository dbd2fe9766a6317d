"""The JSON Schema of a whole message (``contracts.message_schema``, docs/schemas/message.schema.json):
current, as closed as the worker, and matching what ``brokers.client`` publishes."""

from __future__ import annotations

import copy
import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from brokers.client import build_message
from contracts.event_schema import export_event_schemas
from contracts.export import export_schemas
from contracts.message_schema import OPTION_SCHEMAS, export_message_schema, message_schema
from contracts.registry import get_contract
from contracts.signing import OPTION_TYPES, option_problem

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
KEY = b"test-signing-key"


@functools.cache
def validator(directory: Path = DOCS) -> Draft202012Validator:
    """The message schema, with the actors' schemas it refers to (by ``$id``), from ``directory``."""
    schemas = [json.loads(p.read_text()) for p in sorted(directory.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas
    )
    [message] = [s for s in schemas if s["$id"] == "edujobs:message"]
    Draft202012Validator.check_schema(message)
    return Draft202012Validator(message, registry=registry, format_checker=FormatChecker())


def published(actor: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A message as ``brokers.client`` publishes it: its routing key, properties and body."""
    message_id, routing_key, body, priority = build_message(
        get_contract(actor), payload, signing_key=KEY, **kwargs
    )
    return {
        "exchange": "",
        "routing_key": routing_key,
        "properties": {
            "delivery_mode": 2,
            "priority": priority,
            "message_id": message_id,
            "timestamp": int(time.time()),
        },
        "body": json.loads(body),
    }


def problems(message: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(message)]


def test_the_published_schemas_are_current(tmp_path: Path) -> None:
    # Given the schemas as the code exports them now
    written = export_schemas(tmp_path)
    written.append(export_message_schema(tmp_path))
    written += export_event_schemas(tmp_path)
    # Then docs/schemas holds exactly those, byte for byte (else: `make schemas`)
    assert sorted(p.name for p in DOCS.glob("*.json")) == sorted(p.name for p in written), "run make schemas"
    for path in written:
        assert (DOCS / path.name).read_text() == path.read_text(), f"{path.name} is stale: run make schemas"


def test_the_schema_names_exactly_the_options_the_worker_reads() -> None:
    assert set(OPTION_SCHEMAS) == set(OPTION_TYPES)
    assert set(message_schema()["$defs"]["options"]["properties"]) == set(OPTION_TYPES)


SAMPLES: list[tuple[str, object]] = [
    ("idempotency_key", "k"),
    ("idempotency_key", ""),
    ("idempotency_key", "x" * 513),
    ("idempotency_key", 7),
    ("priority_name", "high"),
    ("priority_name", "urgent"),
    ("broker_priority", 9),
    ("broker_priority", 10),
    ("broker_priority", 5.5),
    ("broker_priority", True),
    ("max_age", 0),
    ("max_age", 1),
    ("max_retries", 1000),
    ("max_retries", 1001),
    ("min_backoff", 0),
    ("min_backoff", -1),
    ("not_before", 1764770400000),
    ("not_before", 2**53),
    ("schedule", "nightly"),
    ("schedule", "x" * 201),
    ("circuit_breaker", "sendgrid"),
    ("circuit_breaker", ["sendgrid", "twilio"]),
    ("circuit_breaker", []),
    ("circuit_breaker", ["sendgrid", ""]),
    ("circuit_breaker", ["p"] * 9),
    ("eta", 1764770400000),
    ("eta", 1764770400000.5),
    ("eta", -1),
    ("eta", "soon"),
    ("retries", 0),
    ("retries", -1),
    ("circuit_delays", 1_000_001),
    ("requeued_from", {"queue": "q.XQ", "at": 1, "by": None}),
    ("requeued_from", {"queue": ["q"]}),
    ("requeued_from", [1]),
    ("_sentry_headers", {"sentry-trace": "x", "baggage": None}),
    ("_sentry_headers", {"sentry-trace": 1}),
    ("_sentry_headers", {"sentry-trace": "x" * 4097}),
    ("signature", "a" * 64),
    ("signature", "A" * 64),
    ("state_signature", "0" * 63),
]


@pytest.mark.parametrize(("name", "value"), SAMPLES)
def test_each_option_schema_agrees_with_the_worker(name: str, value: object) -> None:
    # The schema accepts an option's value exactly when the worker's check does
    schema = Draft202012Validator(OPTION_SCHEMAS[name])
    assert schema.is_valid(value) == (option_problem({name: value}) is None)


@pytest.mark.parametrize(
    ("actor", "payload", "kwargs"),
    [
        ("notifications.send_email", {"user_id": 7, "template": "welcome"}, {}),
        (
            "notifications.send_email",
            {"user_id": 7, "template": "welcome", "context": {"name": "Zoë"}},
            {"priority": "critical", "delay": 3600, "idempotency_key": "welcome:7"},
        ),
        ("notifications.send_sms", {"user_id": 7, "template": "iep_reminder"}, {"priority": "bulk"}),
        ("reports.generate_system_health_summary", {}, {}),
    ],
)
def test_what_the_client_publishes_matches_the_schema(
    actor: str, payload: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    assert problems(published(actor, payload, **kwargs)) == []


def forge(change: str) -> dict[str, Any]:
    message = published("notifications.send_email", {"user_id": 7, "template": "welcome"})
    body = message["body"]
    if change == "an option edujobs does not read":
        body["options"]["pipe_target"] = {"actor_name": "maintenance.run_cleanup"}
    elif change == "a field the contract does not have":
        body["kwargs"]["bcc"] = "eve@example.com"
    elif change == "a kwargs field of the wrong type":
        body["kwargs"]["user_id"] = "7"
    elif change == "another actor's queue":
        body["queue_name"] = message["routing_key"] = "media"
    elif change == "a routing key that is not its queue":
        message["routing_key"] = "notifications.DQ"
    elif change == "no signature":
        del body["options"]["signature"]
    elif change == "a state without a state signature":
        body["options"]["eta"] = 1
    elif change == "a state signature without a state":
        body["options"]["state_signature"] = "0" * 64
    elif change == "a top-level field Dramatiq's format does not have":
        body["pipe"] = []
    elif change == "positional arguments":
        body["args"] = [7]
    elif change == "a transient message":
        message["properties"]["delivery_mode"] = 1
    elif change == "a priority past 9":
        message["properties"]["priority"] = 10
    elif change == "an unknown actor":
        body["actor_name"] = "notifications.send_fax"
    return message


@pytest.mark.parametrize(
    "change",
    [
        "an option edujobs does not read",
        "a field the contract does not have",
        "a kwargs field of the wrong type",
        "another actor's queue",
        "a routing key that is not its queue",
        "no signature",
        "a state without a state signature",
        "a state signature without a state",
        "a top-level field Dramatiq's format does not have",
        "positional arguments",
        "a transient message",
        "a priority past 9",
        "an unknown actor",
    ],
)
def test_a_forged_message_does_not_match(change: str) -> None:
    message = forge(change)
    assert problems(message), change
    # (and the untouched message did)
    assert problems(forge("nothing")) == []


def test_the_signature_vectors_messages_have_the_shape_of_a_body() -> None:
    # The vectors' messages (envelopes, options) are bodies the options schema accepts
    vectors = json.loads((DOCS.parent / "signature-vectors.json").read_text())["vectors"]
    options = Draft202012Validator({**message_schema()["$defs"]["options"], "required": []})
    for vector in vectors:
        signed = copy.deepcopy(vector["message"]["options"])
        signed["signature"] = vector["signature"]
        if "state_signature" in vector:
            signed["state_signature"] = vector["state_signature"]
        assert options.is_valid(signed), vector["name"]
