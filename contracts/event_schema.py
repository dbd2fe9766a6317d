"""JSON Schemas of events, for producers in other languages: one per event contract
(``event.<name>.schema.json``, ``$id`` ``edujobs:event:<name>``) and the whole published event
(``event-message.schema.json``, ``$id`` ``edujobs:event-message``).

An event is published to the ``edujobs.events`` topic exchange with its name as routing key, as a
signed Dramatiq message whose envelope names the event (``contracts.events``): ``queue_name``
``edujobs.events``, ``actor_name`` the event's name, ``message_id`` the event's id, and the options
``event``, ``event_id`` and ``occurred_at`` (docs/wire-format.md, "Events"). The options' schemas are
the whole message's (``contracts.message_schema.OPTION_SCHEMAS``): one closed set for both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.events import (
    EVENT_ID_OPTION,
    EVENT_OPTION,
    EVENTS_EXCHANGE,
    OCCURRED_AT_OPTION,
    all_events,
    handlers_of,
)
from contracts.message_schema import MESSAGE_FIELDS, OPTION_SCHEMAS
from contracts.signing import MAX_SAFE_INTEGER, SIGNATURE_OPTION

EVENT_MESSAGE_ID = "edujobs:event-message"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def event_schema_id(name: str) -> str:
    return f"edujobs:event:{name}"


def event_message_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a published event: exchange, routing key, AMQP
    properties and body."""
    events = list(all_events())
    sender_options = {
        name: schema
        for name, schema in OPTION_SCHEMAS.items()
        if name in (EVENT_OPTION, EVENT_ID_OPTION, OCCURRED_AT_OPTION, SIGNATURE_OPTION)
    }
    body = {
        "type": "object",
        "required": list(MESSAGE_FIELDS),
        "additionalProperties": False,
        "properties": {
            "queue_name": {"const": EVENTS_EXCHANGE},
            "actor_name": {"enum": events, "description": "the event's name (options.event)"},
            "args": {"type": "array", "maxItems": 0},
            "kwargs": {"type": "object", "description": "the event's contract: its own schema"},
            "options": {
                "type": "object",
                "description": "An event carries no other option: each handler has its own priority "
                "and retries. The signature covers the body as published (docs/wire-format.md).",
                "properties": sender_options,
                "required": sorted(sender_options),
                "additionalProperties": False,
            },
            "message_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "the event's id (options.event_id): publishing an id again runs no "
                "handler's side effect twice",
            },
            "message_timestamp": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER},
        },
        "allOf": [
            {
                "if": {"properties": {"actor_name": {"const": name}}, "required": ["actor_name"]},
                "then": {
                    "properties": {
                        "kwargs": {"$ref": event_schema_id(name)},
                        "options": {"properties": {EVENT_OPTION: {"const": name}}},
                    }
                },
            }
            for name in events
        ],
    }
    return {
        "$schema": _DRAFT,
        "$id": EVENT_MESSAGE_ID,
        "title": "edujobs event (wire format v1)",
        "description": f"What a producer publishes to RabbitMQ for a domain event: the {EVENTS_EXCHANGE} "
        "topic exchange, the event's name as routing key, persistent, and a signed Dramatiq message "
        "naming the event. Every handler bound to the event gets it once. See docs/wire-format.md.",
        "type": "object",
        "required": ["exchange", "routing_key", "properties", "body"],
        "additionalProperties": False,
        "properties": {
            "exchange": {"const": EVENTS_EXCHANGE},
            "routing_key": {"enum": events, "description": "the event's name: body.actor_name"},
            "properties": {
                "type": "object",
                "required": ["delivery_mode", "timestamp"],
                "properties": {
                    "delivery_mode": {"const": 2, "description": "persistent"},
                    "priority": {"const": 0, "description": "none: each handler has its own"},
                    "timestamp": {"type": "integer", "minimum": 0, "description": "seconds since the epoch"},
                },
            },
            "body": body,
        },
        "allOf": [
            {
                "if": {"properties": {"routing_key": {"const": name}}, "required": ["routing_key"]},
                "then": {"properties": {"body": {"properties": {"actor_name": {"const": name}}}}},
            }
            for name in events
        ],
    }


def export_event_schemas(directory: Path) -> list[Path]:
    """Write each event's schema and the whole event message's to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in all_events().items():
        schema = spec.model.model_json_schema()
        schema["$schema"] = _DRAFT
        schema["$id"] = event_schema_id(name)
        handlers = list(handlers_of(name))
        schema["x-edujobs"] = {"event": name, "exchange": EVENTS_EXCHANGE, "handlers": handlers}
        path = directory / f"event.{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = directory / "event-message.schema.json"
    path.write_text(json.dumps(event_message_schema(), indent=2, ensure_ascii=False) + "\n")
    written.append(path)
    return written
