"""One dead letter as read from ``Q.XQ``, and how it is shown: personal data redacted unless revealed.

A dead letter is the original Dramatiq message with ``options["dead_letter"]`` (see ``brokers.dlq``)
and ``x-edujobs-*`` headers; an undecodable body has only the headers and is shown as raw base64.
Personal data hides in more than the arguments: the error (and so the ``x-edujobs-error`` header and
the traceback's last line) often names the recipient, so every string a reader sees goes through
``redact`` unless the operator asked to reveal (which ``ops.dlq`` audits).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brokers.topology import canonical

#: Options that belong to one life of a message and are reset when it is requeued.
RESET_OPTIONS = (
    "retries",
    "dead_letter",
    "dead_letter_reason",
    "dead_letter_exception",
    "traceback",
    "first_failure_at",
    "requeue_timestamp",
    "eta",
)

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"(e[-_]?mail|phone|mobile|name|token|password|passwd|secret|api[-_]?key|address|birth|ssn|iban|card)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])")


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with personal data replaced: values under sensitive keys (emails, phones, names,
    tokens...) and email addresses or phone numbers inside any string."""
    sensitive = key is not None and _SENSITIVE_KEY.search(key) is not None
    if sensitive and value not in (None, "") and not isinstance(value, dict | list):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, value))
    return value


def redact_values(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Each value redacted as a string, whatever its key: for headers and message options, whose
    keys are edujobs' own (``priority_name`` is not a person's name) but whose values may quote one."""
    return {k: redact(v) for k, v in mapping.items()}


@dataclass
class DeadLetter:
    """One dead letter as read from ``Q.XQ``."""

    id: str
    queue: str
    position: int
    body: bytes
    headers: dict[str, Any]
    priority: int | None
    message: dict[str, Any] | None  # None: the body is not a Dramatiq message
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def decoded(self) -> bool:
        return self.message is not None

    @property
    def actor(self) -> str:
        return str((self.message or {}).get("actor_name", ""))

    @property
    def reason(self) -> str:
        return str(self.record.get("reason", ""))

    @property
    def fingerprint(self) -> str:
        return str(self.record.get("fingerprint", ""))

    @property
    def last_failure_at(self) -> int:
        return int(self.record.get("last_failure_at") or 0)

    def summary(self) -> dict[str, Any]:
        """What a listing shows: no arguments, no traceback."""
        return {
            "id": self.id,
            "queue": self.queue,
            "position": self.position,
            "actor": self.actor,
            "reason": self.reason,
            "exception_type": self.record.get("exception_type", ""),
            "error": redact(str(self.record.get("error", ""))),
            "attempts": self.record.get("attempts"),
            "first_failure_at": self.record.get("first_failure_at"),
            "last_failure_at": self.record.get("last_failure_at"),
            "fingerprint": self.fingerprint,
            "worker": self.record.get("worker", ""),
            "decoded": self.decoded,
        }

    def _revealable(self, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
        """``data`` (a summary) with the error and headers, redacted unless ``reveal``."""
        if reveal:
            data["error"] = str(self.record.get("error", ""))
        data["headers"] = dict(self.headers) if reveal else redact_values(self.headers)
        data["revealed"] = reveal
        return data

    def _raw(self, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
        """``data`` with the undecodable body (base64, redacted unless ``reveal``) and its size."""
        data["raw_base64"] = base64.b64encode(self.body).decode() if reveal else REDACTED
        data["raw_bytes"] = len(self.body)
        return data

    def detail(self, *, reveal: bool = False) -> dict[str, Any]:
        """Everything about the dead letter; personal data redacted unless ``reveal``."""
        data = self._revealable(self.summary(), reveal)
        traceback = str(self.record.get("traceback", ""))
        data["traceback"] = traceback if reveal else redact(traceback)
        if self.message is None:
            return self._raw(data, reveal)
        args = self.message.get("args", [])
        kwargs = self.message.get("kwargs", {})
        data["args"] = args if reveal else redact(args)
        data["kwargs"] = kwargs if reveal else redact(kwargs)
        options = {
            k: v for k, v in self.message.get("options", {}).items() if k not in ("dead_letter", "traceback")
        }
        data["options"] = options if reveal else redact_values(options)
        data["message_timestamp"] = self.message.get("message_timestamp")
        return data

    def export(self, *, reveal: bool = False) -> dict[str, Any]:
        """One JSON line of ``export``: the message (or raw base64 body) and its headers, with
        personal data redacted unless ``reveal`` (then the line can be requeued by hand as is)."""
        data = self._revealable(self.summary(), reveal)
        data["priority"] = self.priority
        if self.message is None:
            self._raw(data, reveal)
        elif reveal:
            data["message"] = self.message
        else:
            message = dict(self.message)
            message["args"] = redact(message.get("args", []))
            message["kwargs"] = redact(message.get("kwargs", {}))
            message["options"] = redact_values(message.get("options") or {})
            data["message"] = message
        return data


def parse(
    queue: str, position: int, body: bytes, headers: Mapping[str, Any], priority: int | None
) -> DeadLetter:
    """Read one dead letter; an undecodable body keeps its bytes and its record from the headers."""
    clean = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in headers.items()}
    message: dict[str, Any] | None
    try:
        loaded = json.loads(body)
        message = loaded if isinstance(loaded, dict) and "message_id" in loaded else None
    except (ValueError, UnicodeDecodeError):
        message = None
    record: dict[str, Any] = {}
    if message is not None:
        record = dict((message.get("options") or {}).get("dead_letter") or {})
    if not record:
        record = {
            "reason": clean.get("x-edujobs-reason", ""),
            "exception_type": clean.get("x-edujobs-exception", ""),
            "error": clean.get("x-edujobs-error", ""),
            "traceback": "",
            "attempts": clean.get("x-edujobs-attempts"),
            "first_failure_at": clean.get("x-edujobs-first-failure-at"),
            "last_failure_at": clean.get("x-edujobs-last-failure-at"),
            "fingerprint": clean.get("x-edujobs-fingerprint", ""),
            "worker": clean.get("x-edujobs-worker", ""),
        }
    if message is not None:
        ident = str(message["message_id"])
    else:
        ident = "raw-" + hashlib.sha1(body).hexdigest()[:16]
    return DeadLetter(ident, canonical(queue), position, body, clean, priority, message, record)


def requeued_body(letter: DeadLetter, now_ms: int) -> bytes:
    """The message as it is republished: same id, actor, arguments and signature; retries reset;
    the dead letter's record kept as ``options["requeued_from"]``."""
    assert letter.message is not None
    message = dict(letter.message)
    options = dict(message.get("options") or {})
    record = options.get("dead_letter") or letter.record
    for key in RESET_OPTIONS:
        options.pop(key, None)
    options["requeued_from"] = {
        "dead_letter_id": letter.id,
        "message_id": message.get("message_id"),
        "reason": record.get("reason", ""),
        "fingerprint": record.get("fingerprint", ""),
        "attempts": record.get("attempts"),
        "at": now_ms,
    }
    message["options"] = options
    message["queue_name"] = letter.queue
    return json.dumps(message, separators=(",", ":")).encode()
