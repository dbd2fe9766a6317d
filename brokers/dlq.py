"""Dead-letter primitives: what a dead letter records and how it is published.

A dead letter is the original Dramatiq message (or, when it could not be decoded, the original bytes)
republished to ``Q.XQ`` with a record of why it died, both inside the message
(``options["dead_letter"]``) and as AMQP headers (``x-edujobs-*``) so that RabbitMQ's management UI
shows the reason too. ``shape_problem`` says when a decoded body is not a Dramatiq message.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from middleware.scrubbing import scrub_text

#: How much of a traceback a dead letter keeps.
TRACEBACK_LIMIT = 4000
#: How much of an error message a dead letter keeps.
ERROR_LIMIT = 1000
#: How much of the error and of the traceback the AMQP headers show.
HEADER_ERROR_LIMIT = 250
HEADER_TRACEBACK_LIMIT = 2000

REASONS = (
    "failed",  # an exception with no retries configured
    "retries_exhausted",
    "permanent_error",
    "undecodable",
    "unknown_actor",
    "invalid_payload",
    "payload_too_large",
    "bad_signature",
    "invalid_options",  # an option edujobs does not read, or of the wrong type
    "wrong_queue",  # the message names another queue than the one it was published to
    "age_limit",
    "requeue_failed",  # a retry or delay could not be re-enqueued (the queue refused it)
    "middleware_error",  # a hook deciding a failed message's fate broke: dead, not acked as done
)


def fingerprint(actor_name: str, reason: str, exception_type: str) -> str:
    """A stable id for a cause of death, used to group dead letters."""
    digest = hashlib.sha1(f"{actor_name}|{reason}|{exception_type}".encode()).hexdigest()
    return digest[:12]


def build_record(
    *,
    reason: str,
    actor_name: str,
    worker: str,
    exception_type: str = "",
    error: str = "",
    traceback: str = "",
    attempts: int = 1,
    first_failure_ms: int | None = None,
) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "reason": reason,
        "exception_type": exception_type,
        "error": error[:ERROR_LIMIT],
        "traceback": traceback[-TRACEBACK_LIMIT:],
        "attempts": attempts,
        "first_failure_at": first_failure_ms or now,
        "last_failure_at": now,
        "fingerprint": fingerprint(actor_name, reason, exception_type),
        "worker": worker,
    }


def record_headers(record: dict[str, Any]) -> dict[str, Any]:
    """The AMQP headers that show a dead letter's record in RabbitMQ's management UI.

    Headers are what an operator sees at a glance, in lists and exports: the error and traceback
    there have e-mail addresses, phone numbers and tokens scrubbed (the record inside the message
    keeps them whole, for whoever opens the message itself)."""
    traceback = scrub_text(record["traceback"])
    if len(traceback) > HEADER_TRACEBACK_LIMIT:
        # The end of a traceback is where it was raised: keep that.
        traceback = "…" + traceback[-(HEADER_TRACEBACK_LIMIT - 1) :]
    return {
        "x-edujobs-reason": record["reason"],
        "x-edujobs-exception": record["exception_type"],
        "x-edujobs-error": scrub_text(record["error"])[:HEADER_ERROR_LIMIT],
        "x-edujobs-traceback": traceback,
        "x-edujobs-attempts": record["attempts"],
        "x-edujobs-first-failure-at": record["first_failure_at"],
        "x-edujobs-last-failure-at": record["last_failure_at"],
        "x-edujobs-fingerprint": record["fingerprint"],
        "x-edujobs-worker": record["worker"],
    }


#: The type each field of Dramatiq's message format must have once decoded (see ``shape_problem``).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "queue_name": (str,),
    "actor_name": (str,),
    "args": (list, tuple),
    "kwargs": (dict,),
    "options": (dict,),
    "message_id": (str,),
    "message_timestamp": (int,),
}


def shape_problem(fields: object) -> str | None:
    """What is wrong with the decoded JSON of a Dramatiq message, or None when its shape is right.

    A body with a field of another type (``"options": []``, ``"actor_name": 7``) decodes into a
    ``Message`` that then raises in the worker's consumer thread, outside any per-message handling,
    which restarts the consumer, redelivers the message and stalls the queue behind it forever:
    such a body is undecodable.
    """
    if _well_formed(fields):
        return None
    if not isinstance(fields, dict):
        return f"expected a JSON object, got {type(fields).__name__}"
    unknown = sorted(set(fields) - set(_FIELD_TYPES))
    if unknown:
        return f"unknown fields {unknown}"
    for name, types in _FIELD_TYPES.items():
        if name not in fields:
            # message_id and message_timestamp too: Dramatiq would make them up, but a signature
            # covers them, so a message without them can be neither checked nor traced.
            return f"missing field {name!r}"
        if not _has_type(fields[name], types):
            return f"field {name!r} is {_json_type(fields[name])}, expected {_JSON_TYPES[types[0]]}"
    if not fields["actor_name"]:
        return "field 'actor_name' is empty"
    return None


def _well_formed(fields: object) -> bool:
    # Every message a worker reads goes through here: the common case, every field present with
    # its JSON type, is checked in one expression before the explanations are looked for.
    if type(fields) is not dict or fields.keys() != _FIELD_TYPES.keys():
        return False
    return (
        type(fields["queue_name"]) is str
        and type(fields["actor_name"]) is str
        and fields["actor_name"] != ""
        and type(fields["args"]) in (list, tuple)
        and type(fields["kwargs"]) is dict
        and type(fields["options"]) is dict
        and type(fields["message_id"]) is str
        and type(fields["message_timestamp"]) is int
    )


def _has_type(value: object, types: tuple[type, ...]) -> bool:
    # bool is an int to Python, never a timestamp or an eta to a sender.
    return isinstance(value, types) and not isinstance(value, bool)


_JSON_TYPES = {
    str: "a string",
    list: "an array",
    dict: "an object",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)
