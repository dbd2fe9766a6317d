"""One dead letter as read from ``Q.XQ``, and how it is shown: personal data redacted unless revealed.

A dead letter is the original Dramatiq message with ``options["dead_letter"]`` (see ``brokers.dlq``)
and ``x-edujobs-*`` headers; an undecodable body has only the headers and is shown as raw base64.
Personal data hides in more than the arguments: the error (and so the ``x-edujobs-error`` header and
the traceback's last line) often names the recipient, so every string a reader sees goes through
``redact`` unless the operator asked to reveal (which ``ops.dlq`` audits).

Anything can be in ``Q.XQ``: what a worker could not decode is kept there byte for byte, and anyone
who can publish to RabbitMQ can put anything there. So ``parse`` trusts no field: a body is shown as
a message only when it is a JSON object with a ``message_id`` nested at most ``MAX_DEPTH`` levels
(deeper ones, and everything else, are shown raw), every record field is brought to its type
(text, a count, a time in milliseconds that a date can show, or nothing), headers are made
JSON-safe, and ``DeadLetter.problem`` says why a letter that is not a well-formed Dramatiq message
cannot be requeued. Listing, showing, exporting and purging work for every letter.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brokers.dlq import shape_problem
from brokers.topology import canonical
from contracts.signing import STATE_OPTIONS, STATE_SIGNATURE_OPTION, Keyring, reseal_state
from store.dead_letter_archive import json_safe

#: Options that belong to one life of a message and are reset when it is requeued.
RESET_OPTIONS = frozenset(
    {
        # The delivery state of its last life (the requeue starts a new one) and its signature,
        *STATE_OPTIONS,
        STATE_SIGNATURE_OPTION,
        # what the worker wrote when it dead-lettered it, and what earlier versions wrote there.
        "dead_letter",
        "dead_letter_reason",
        "dead_letter_exception",
        "traceback",
    }
)

#: A body nested deeper than this is shown raw: showing it would recurse that deep (a worker could
#: not decode 10,000 levels either), and no edujobs message comes near it.
MAX_DEPTH = 64
#: Record texts longer than this are cut when shown (a worker keeps 4,000 characters of traceback).
MAX_TEXT = 10_000
#: Times a dead letter's record may carry, in milliseconds: after 1970 and before the year 10000
#: (what Python's ``datetime`` and the page's ``Date`` can show); anything else is shown as unknown.
MAX_TIME_MS = 253_402_300_800_000
#: A message id used as the dead letter's id (in URLs and commands); any other id is replaced by
#: ``raw-`` and a hash of the body.
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}")

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"(e[-_]?mail|phone|mobile|name|token|password|passwd|secret|api[-_]?key|address|birth|ssn|iban|card)",
    re.IGNORECASE,
)
# The lookbehind starts a match only where a run of address characters starts, and the possessive
# ``++`` never backtracks into it: linear in the text's length (an unanchored ``[...]+@`` rescans
# the rest of the text from every position, minutes for a megabyte of letters without an @).
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Bounded for the same reason: no phone number is 30 characters long.
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,30}\d(?![\w.])")


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


def _redact_options(options: Any) -> Any:
    return redact_values(options) if isinstance(options, dict) else redact(options)


@dataclass
class DeadLetter:
    """One dead letter as read from ``Q.XQ``."""

    id: str
    queue: str
    position: int
    body: bytes
    headers: dict[str, Any]
    priority: int | None
    message: dict[str, Any] | None  # None: the body is not shown as a Dramatiq message
    record: dict[str, Any] = field(default_factory=dict)
    #: Why the letter cannot be requeued (None: its body is a well-formed Dramatiq message); anything
    #: else would only be dead-lettered again as undecodable.
    problem: str | None = None
    #: For a letter read from the archive: when it was archived (ms) and the archive file.
    archived: dict[str, Any] | None = None

    @property
    def decoded(self) -> bool:
        return self.message is not None

    @property
    def actor(self) -> str:
        return _text((self.message or {}).get("actor_name"), 200)

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
            **({"archived": self.archived} if self.archived is not None else {}),
        }

    def _revealable(self, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
        """``data`` (a summary) with the error and headers, redacted unless ``reveal``."""
        if reveal:
            data["error"] = str(self.record.get("error", ""))
        data["headers"] = dict(self.headers) if reveal else redact_values(self.headers)
        data["revealed"] = reveal
        if self.problem is not None:
            data["not_requeueable"] = self.problem if reveal else redact(self.problem)
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
        options: Any = self.message.get("options", {})
        if isinstance(options, dict):
            options = {k: v for k, v in options.items() if k not in ("dead_letter", "traceback")}
        data["options"] = options if reveal else _redact_options(options)
        data["message_timestamp"] = _time_ms(self.message.get("message_timestamp"))
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
            message["options"] = _redact_options(message.get("options") or {})
            data["message"] = message
        return data

    def for_requeue(self) -> DeadLetter:
        """This letter as ``requeued_body`` reads it: a forged ``options["dead_letter"]`` (not an
        object) is replaced by the record shown, since the requeued message drops it anyway."""
        assert self.message is not None and isinstance(self.message.get("options"), dict)
        options = self.message["options"]
        if isinstance(options.get("dead_letter"), dict):
            return self
        message = {**self.message, "options": {**options, "dead_letter": self.record}}
        return dataclasses.replace(self, message=message)


def parse(
    queue: str,
    position: int,
    body: bytes,
    headers: Mapping[str, Any],
    priority: int | None,
    timestamp: int | None = None,
) -> DeadLetter:
    """Read one dead letter, whatever its body and headers; an undecodable body keeps its bytes and
    its record from the headers. ``timestamp`` (AMQP, seconds) stands in for an unknown last failure."""
    clean = {str(k): json_safe(v) for k, v in headers.items()}
    loaded, problem = _load(body)
    message = loaded if isinstance(loaded, dict) and "message_id" in loaded else None
    if message is None and problem is None:
        problem = "the body is not a Dramatiq message"
    elif message is not None and problem is None:
        shape = shape_problem(message)
        problem = None if shape is None else f"the body is not a well-formed Dramatiq message: {shape}"
    options = message.get("options") if message is not None else None
    found = options.get("dead_letter") if isinstance(options, dict) else None
    record = _record(found) if isinstance(found, dict) and found else _record_from_headers(clean)
    if record["last_failure_at"] is None and isinstance(timestamp, int) and not isinstance(timestamp, bool):
        record["last_failure_at"] = _time_ms(timestamp * 1000)
    message_id = message.get("message_id") if message is not None else None
    if isinstance(message_id, str) and _PLAIN_ID.fullmatch(message_id):
        ident = message_id
    else:
        ident = "raw-" + hashlib.sha1(body).hexdigest()[:16]
    return DeadLetter(ident, canonical(queue), position, body, clean, priority, message, record, problem)


def _load(body: bytes) -> tuple[Any, str | None]:
    """The body's JSON and why it cannot be requeued as is (None if nothing says so yet); None
    and the reason when the body is not JSON, or nested deeper than ``MAX_DEPTH``."""
    odd_numbers: list[str] = []

    def number(text: str) -> Any:
        value = float(text)
        if math.isfinite(value):
            return value
        odd_numbers.append(text)  # NaN, Infinity, 1e999: Python reads them, JSON has none
        return text

    try:
        loaded = json.loads(body, parse_float=number, parse_constant=number)
    except RecursionError:
        return None, f"the body is nested deeper than {MAX_DEPTH} levels"
    except ValueError:  # UnicodeDecodeError included
        return None, "the body is not JSON"
    if _deeper_than(loaded, MAX_DEPTH):
        return None, f"the body is nested deeper than {MAX_DEPTH} levels"
    if odd_numbers:
        return loaded, f"the body has numbers JSON cannot carry ({', '.join(odd_numbers[:3])})"
    return loaded, None


def _deeper_than(value: Any, limit: int) -> bool:
    # A loop, not recursion: the point is to refuse what would recurse too deep.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _record(found: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter's record with each field of its type, whatever was stored."""
    return {
        "reason": _text(found.get("reason"), 200),
        "exception_type": _text(found.get("exception_type"), 200),
        "error": _text(found.get("error"), MAX_TEXT),
        "traceback": _text(found.get("traceback"), MAX_TEXT),
        "attempts": _count(found.get("attempts")),
        "first_failure_at": _time_ms(found.get("first_failure_at")),
        "last_failure_at": _time_ms(found.get("last_failure_at")),
        "fingerprint": _text(found.get("fingerprint"), 200),
        "worker": _text(found.get("worker"), 200),
    }


def _record_from_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    fields = ("reason", "exception", "error", "traceback", "attempts", "fingerprint", "worker")
    found = {name: headers.get(f"x-edujobs-{name}") for name in fields}
    found["exception_type"] = found.pop("exception")
    found["traceback"] = ""  # the headers' traceback is in ``headers`` already
    found["first_failure_at"] = headers.get("x-edujobs-first-failure-at")
    found["last_failure_at"] = headers.get("x-edujobs-last-failure-at")
    return _record(found)


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = value if isinstance(value, str) else json.dumps(json_safe(value), ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def _count(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def _time_ms(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return int(value) if 0 < value < MAX_TIME_MS else None


def requeued_body(letter: DeadLetter, now_ms: int, keyring: Keyring) -> bytes:
    """The message as it is republished: same id, actor, arguments, options and sender signature;
    its delivery state reset (retries, eta...), the dead letter's record kept as
    ``options["requeued_from"]``, that state signed with ``keyring`` (``contracts.signing``).
    Raises ``SignatureError`` when the letter's own signature does not check out with the keys
    (a forgery, or a key since rotated out): a worker would dead-letter it again, so it is not sent."""
    assert letter.message is not None
    message = dict(letter.message)
    options = {
        key: value for key, value in (message.get("options") or {}).items() if key not in RESET_OPTIONS
    }
    # The record as parsed (typed), not as the letter carries it: anyone may have written that.
    record = letter.record
    attempts = record.get("attempts")
    options["requeued_from"] = {
        "dead_letter_id": letter.id,
        "message_id": str(message.get("message_id")),
        "reason": str(record.get("reason") or ""),
        "fingerprint": str(record.get("fingerprint") or ""),
        "attempts": attempts if type(attempts) is int else None,
        "at": now_ms,
    }
    message["options"] = options
    message["queue_name"] = letter.queue
    reseal_state(keyring, message)
    return json.dumps(message, separators=(",", ":")).encode()
