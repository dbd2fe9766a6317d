"""Dead-letter primitives: what a dead letter records and how it is published.

A dead letter is the original Dramatiq message (or, when it could not be decoded, the original bytes)
republished to ``Q.XQ`` with a record of why it died, both inside the message
(``options["dead_letter"]``) and as AMQP headers (``x-edujobs-*``) so that RabbitMQ's management UI
shows the reason too.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

#: How much of a traceback a dead letter keeps.
TRACEBACK_LIMIT = 4000
#: How much of an error message a dead letter keeps.
ERROR_LIMIT = 1000

REASONS = (
    "failed",  # an exception with no retries configured
    "retries_exhausted",
    "permanent_error",
    "undecodable",
    "unknown_actor",
    "invalid_payload",
    "payload_too_large",
    "bad_signature",
    "age_limit",
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
    """The AMQP headers that show a dead letter's record in RabbitMQ's management UI."""
    return {
        "x-edujobs-reason": record["reason"],
        "x-edujobs-exception": record["exception_type"],
        "x-edujobs-error": record["error"][:250],
        "x-edujobs-attempts": record["attempts"],
        "x-edujobs-first-failure-at": record["first_failure_at"],
        "x-edujobs-last-failure-at": record["last_failure_at"],
        "x-edujobs-fingerprint": record["fingerprint"],
        "x-edujobs-worker": record["worker"],
    }
