"""The JSON Schema of a whole published message (wire format v1), for producers in other languages.

``edujobs contracts export DIR`` writes one schema per actor: its keyword arguments. This one is
the message around them, as a producer publishes it::

    {"exchange": "", "routing_key": <queue or queue.DQ>,
     "properties": {<AMQP properties: delivery_mode, priority, timestamp, ...>},
     "body": {<Dramatiq's message: queue_name, actor_name, args, kwargs, options, ...>}}

It is generated from what the worker checks, so that it cannot drift from it: the actors, their
queues and contracts come from ``contracts.registry`` (each body's ``kwargs`` refers to the actor's
own schema by its ``$id``, ``edujobs:<actor name>``), the options from ``contracts.signing``'s closed
``OPTION_TYPES`` (``OPTION_SCHEMAS`` must name exactly the same options: a test checks it, and checks
each option's schema against the worker's checker on sample values), the priorities from
``contracts.priorities``. ``docs/message.schema.json`` is this schema, kept current by a test
(``make schemas`` writes it). What a schema cannot say (the signatures' values, the size limit,
``routing_key`` equal to ``queue_name``) is in ``description`` and docs/wire-format.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.priorities import MAX_PRIORITY, PRIORITIES
from contracts.registry import all_contracts
from contracts.signing import MAX_SAFE_INTEGER, SIGNATURE_OPTION, STATE_OPTIONS, STATE_SIGNATURE_OPTION

SCHEMA_ID = "edujobs:message"
#: Dramatiq's message fields, every one required.
MESSAGE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
DELAY_SUFFIX = ".DQ"


def _integer(low: int, high: int = MAX_SAFE_INTEGER, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if description:
        schema["description"] = description
    return schema


def _text(limit: int, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limit, "description": description}


_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_PROVIDER = {"type": "string", "minLength": 1}

#: The JSON Schema of each option in ``contracts.signing.OPTION_TYPES``, the same closed set.
OPTION_SCHEMAS: dict[str, dict[str, Any]] = {
    "idempotency_key": _text(512, "the side effect's key: the same key is performed once"),
    "priority_name": {
        "enum": list(PRIORITIES),
        "description": "the named priority (critical skips quiet hours)",
    },
    "broker_priority": _integer(0, MAX_PRIORITY, "the AMQP priority, also set as the property"),
    "max_age": _integer(1, description="ms: override of the actor's max_age"),
    "time_limit": _integer(1, description="ms: override of the actor's time_limit"),
    "max_retries": _integer(0, 1000, "override of the actor's max_retries"),
    "min_backoff": _integer(0, description="ms: override of the actor's min_backoff"),
    "max_backoff": _integer(0, description="ms: override of the actor's max_backoff"),
    "not_before": _integer(0, description="ms since the epoch: a delayed message's due time"),
    "schedule": _text(200, "the schedule that fired it"),
    "schedule_monitor": {
        "type": "object",
        "properties": {
            "crontab": {"type": "string", "minLength": 1, "maxLength": 200},
            "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
            "checkin_margin": {"type": "integer", "minimum": 1, "maximum": 1440},
        },
        "required": ["crontab"],
        "additionalProperties": False,
        "description": "the schedule's Sentry Crons monitor: crontab, time zone, check-in margin (minutes)",
    },
    "event": _text(200, "an event's name (event-message.schema.json only)"),
    "event_id": _text(200, "an event's id (event-message.schema.json only)"),
    "occurred_at": _integer(0, description="ms since the epoch: when an event happened (events only)"),
    "circuit_breaker": {
        "anyOf": [_PROVIDER, {"type": "array", "items": _PROVIDER, "minItems": 1, "maxItems": 8}],
        "description": "providers whose open circuit breaker delays the message",
    },
    "eta": {
        "type": "number",
        "minimum": 0,
        "maximum": MAX_SAFE_INTEGER,
        "description": "state: ms since the epoch when it may run (a delay)",
    },
    "retries": _integer(0, 1_000_000, "state: attempts so far"),
    "requeue_timestamp": _integer(0, description="state: ms"),
    "first_failure_at": _integer(0, description="state: ms"),
    "circuit_delays": _integer(0, 1_000_000, "state: delays by an open breaker"),
    "requeued_from": {
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {"type": ["string", "integer", "null"]},
        "description": "state: where an operator requeued it from",
    },
    "_sentry_headers": {
        "type": "object",
        "maxProperties": 8,
        "additionalProperties": {"type": ["string", "null"], "maxLength": 4096},
        "description": "state: Sentry's trace headers",
    },
    SIGNATURE_OPTION: {**_HEX, "description": "HMAC-SHA256 of the sender document (wire-format.md)"},
    STATE_SIGNATURE_OPTION: {
        **_HEX,
        "description": "HMAC-SHA256 of the state document, present exactly when a state option is",
    },
}


def _options() -> dict[str, Any]:
    state = sorted(STATE_OPTIONS)
    return {
        "type": "object",
        "description": "The options edujobs reads; any other is dead-lettered (invalid_options). "
        "State options (" + ", ".join(state) + ") are covered by state_signature, the others by "
        "signature.",
        "properties": OPTION_SCHEMAS,
        "additionalProperties": False,
        "required": [SIGNATURE_OPTION],
        "dependentRequired": {name: [STATE_SIGNATURE_OPTION] for name in state},
        # A state signature without any state is refused too.
        "if": {"required": [STATE_SIGNATURE_OPTION]},
        "then": {"anyOf": [{"required": [name]} for name in state]},
    }


def message_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a published message: exchange, routing key, AMQP
    properties and body."""
    contracts = all_contracts()
    queues = sorted({c.queue for c in contracts.values()})
    routing_keys = [name for q in queues for name in (q, q + DELAY_SUFFIX)]
    body = {
        "type": "object",
        "description": "Dramatiq's message, UTF-8 JSON (at most EDUJOBS_MAX_PAYLOAD_BYTES, 256 KiB by "
        "default); a missing or extra field, or one of another type, is dead-lettered (undecodable).",
        "required": list(MESSAGE_FIELDS),
        "additionalProperties": False,
        "properties": {
            "queue_name": {
                "enum": routing_keys,
                "description": "the actor's queue, or <queue>.DQ for a delayed message; the same as "
                "the routing key (anything else is dead-lettered: wrong_queue)",
            },
            "actor_name": {"enum": list(contracts)},
            "args": {"type": "array", "maxItems": 0, "description": "always empty: arguments go in kwargs"},
            "kwargs": {"type": "object", "description": "the actor's contract: its own schema"},
            "options": {
                "$ref": "#/$defs/options",
                # Events have a schema of their own (event-message.schema.json).
                "not": {"anyOf": [{"required": ["event"]}, {"required": ["event_id"]}]},
            },
            "message_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "a UUID (the job store keeps up to 64 characters); the clients derive "
                "it (UUID v5) from the actor and the idempotency key when there is one",
            },
            "message_timestamp": _integer(0, description="ms since the epoch, when it was sent"),
        },
        # Each actor's queue and contract.
        "allOf": [
            {
                "if": {"properties": {"actor_name": {"const": name}}, "required": ["actor_name"]},
                "then": {
                    "properties": {
                        "queue_name": {"enum": [c.queue, c.queue + DELAY_SUFFIX]},
                        "kwargs": {"$ref": f"edujobs:{name}"},
                    }
                },
            }
            for name, c in contracts.items()
        ],
    }
    properties = {
        "type": "object",
        "description": "AMQP basic properties; others (headers, app_id, ...) are ignored",
        "required": ["delivery_mode", "priority", "timestamp"],
        "properties": {
            "delivery_mode": {"const": 2, "description": "persistent"},
            "priority": _integer(0, MAX_PRIORITY, "the AMQP priority: options.broker_priority"),
            "timestamp": _integer(
                0, description="seconds since the epoch (RabbitMQ's oldest-message age reads it)"
            ),
            "content_type": {"const": "application/json", "description": "may be left out"},
            "content_encoding": {"const": "utf-8", "description": "may be left out"},
            "message_id": {"type": "string", "description": "may be set: body.message_id"},
        },
    }
    delays = (
        "A delay: publish to <queue>.DQ with queue_name <queue>.DQ and the options eta and "
        "not_before set to the due time (ms since the epoch); eta needs a state_signature. Up to "
        "EDUJOBS_PARK_THRESHOLD_SECONDS (600) a worker holds it in memory; a longer one is parked in "
        "<queue>.park and looked at again every 10 minutes, until due."
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "edujobs message (wire format v1)",
        "description": "What a producer publishes to RabbitMQ: the default exchange, the queue as "
        "routing key, persistent, with a priority and a timestamp, and a signed Dramatiq message. "
        "The kwargs refer to the actor's schema by $id (edujobs:<actor name>, written by `edujobs "
        "contracts export`). " + delays + " See docs/wire-format.md.",
        "type": "object",
        "required": ["exchange", "routing_key", "properties", "body"],
        "additionalProperties": False,
        "properties": {
            "exchange": {"const": "", "description": "the default exchange"},
            "routing_key": {"enum": routing_keys, "description": "the body's queue_name"},
            "properties": properties,
            "body": {"$ref": "#/$defs/body"},
        },
        # The routing key and the body's queue_name are the same queue.
        "allOf": [
            {
                "if": {"properties": {"routing_key": {"const": key}}, "required": ["routing_key"]},
                "then": {"properties": {"body": {"properties": {"queue_name": {"const": key}}}}},
            }
            for key in routing_keys
        ],
        "$defs": {"body": body, "options": _options()},
    }


def render_message_schema() -> str:
    return json.dumps(message_schema(), indent=2, ensure_ascii=False) + "\n"


def export_message_schema(path: Path) -> Path:
    """Write the message schema to ``path`` (a file, or a directory: ``message.schema.json`` in it)."""
    if path.is_dir():
        path = path / "message.schema.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_message_schema())
    return path
