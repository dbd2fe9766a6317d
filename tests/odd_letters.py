"""A corpus of odd dead letters, published straight to ``Q.XQ`` the way a confused producer, a
worker's raw dead-lettering or an attacker with access to RabbitMQ could leave them.

Each letter's body is a Dramatiq message built with ``tests.amqp.dramatiq_message`` and then bent
(a field of the wrong type, a forged record), or bytes that are not a Dramatiq message at all; the
headers are a worker's ``x-edujobs-*`` record, odd ones, or none. The dead-letter tools must list,
show, export and purge every one of them, and requeue only those that are well-formed messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pika

from brokers import dlq as records
from contracts.signing import sign_message
from tests.amqp import dramatiq_message

KEY = b"test-signing-key"


@dataclass(frozen=True)
class OddLetter:
    name: str
    body: bytes
    headers: dict[str, Any] | None
    #: Whether requeueing it makes sense: the body is a well-formed Dramatiq message.
    requeueable: bool
    message_id: str | None = None


def _headers(error: str = "the body is not a Dramatiq message") -> dict[str, Any]:
    record = records.build_record(
        reason="undecodable", actor_name="", worker="w1", exception_type="DecodeError", error=error
    )
    return records.record_headers(record)


def _message(**changes: Any) -> dict[str, Any]:
    """A message signed as it is (odd ids and arguments included): a requeue keeps its signature."""
    message = dramatiq_message("testing.record", "maintenance", {"value": "odd"}, key=None)
    message.update(changes)
    sign_message(KEY, message)
    return message


def _mangled(**changes: Any) -> dict[str, Any]:
    """A signed message whose fields were then given types no producer could sign."""
    message = dramatiq_message("testing.record", "maintenance", {"value": "odd"}, key=KEY)
    message.update(changes)
    return message


def _encoded(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def odd_letters() -> list[OddLetter]:
    """Every odd letter of the corpus (about 3 MB in all, the huge one included)."""
    with_list_options = _mangled(options=[1, "two"])
    with_string_options = _mangled(options="eta=0")
    with_null_options = _mangled(options=None)
    with_forged_record = _message()
    with_forged_record["options"]["dead_letter"] = ["not", "a", "record"]
    with_odd_record = _message()
    with_odd_record["options"]["dead_letter"] = {
        "reason": 5,
        "attempts": {"n": 3},
        "last_failure_at": "yesterday",
        "first_failure_at": 10**30,
        "fingerprint": ["a"],
        "error": {"nested": "[/bold] closing a tag nobody opened"},
        "traceback": None,
    }
    with_deep_kwargs = _message(kwargs={"deep": _nested(600)})
    with_dict_id = _mangled(message_id={"a": 1})
    with_path_id = _message(message_id="../../etc/passwd")
    with_long_id = _message(message_id="x" * 5000)
    with_list_actor = _mangled(actor_name=["testing.record"])
    # A long run of address characters without an @ took the redaction's e-mail pattern minutes.
    huge = _message(kwargs={"blob": "é" * 500_000, "note": "a" * 200_000})
    plain = _message()
    # Python's json writes NaN and Infinity, which JSON (and the API's responses) do not allow.
    non_finite = _mangled(args=[float("nan"), float("inf")])
    odd_headers = {
        "x-edujobs-reason": 42,
        "x-edujobs-attempts": "three",
        "x-edujobs-first-failure-at": {"t": 1},
        "x-edujobs-last-failure-at": "yesterday",
        "x-edujobs-error": b"\xff\xfe not utf-8 [/]",
        "x-edujobs-fingerprint": ["a", "b"],
        "x-edujobs-worker": {"nested": {"deeper": b"\xff", "when": datetime(2026, 1, 1, tzinfo=UTC)}},
        "x-edujobs-exception": Decimal("1.5"),
        "x-edujobs-traceback": None,
    }
    far_future = {**_headers(), "x-edujobs-last-failure-at": 2**62, "x-edujobs-first-failure-at": -5}
    return [
        OddLetter("options-list", _encoded(with_list_options), _headers(), False),
        OddLetter("options-string", _encoded(with_string_options), _headers(), False),
        OddLetter("options-null", _encoded(with_null_options), _headers(), False),
        OddLetter("forged-record", _encoded(with_forged_record), None, True, plain_id(with_forged_record)),
        OddLetter("odd-record", _encoded(with_odd_record), None, True, plain_id(with_odd_record)),
        OddLetter("deep-array-10000", b"[" * 10_000 + b"]" * 10_000, _headers("nested too deep"), False),
        OddLetter("deep-object-10000", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, _headers(), False),
        OddLetter("deep-kwargs-600", _encoded(with_deep_kwargs), _headers(), False),
        OddLetter("json-list", b"[1, 2, 3]", _headers(), False),
        OddLetter("json-number", b"7", _headers(), False),
        OddLetter("json-string", b'"hello"', _headers(), False),
        OddLetter("json-null", b"null", _headers(), False),
        OddLetter("json-empty-object", b"{}", _headers(), False),
        OddLetter("invalid-utf8", b'{"message_id": "\xff\xfe", "args": []}', _headers(), False),
        OddLetter("empty-body", b"", _headers(), False),
        OddLetter("message-id-object", _encoded(with_dict_id), _headers(), False),
        OddLetter("message-id-path", _encoded(with_path_id), None, True),
        OddLetter("message-id-long", _encoded(with_long_id), None, True),
        OddLetter("message-id-newline", _encoded(_message(message_id="line\nbreak\n")), None, True),
        OddLetter("actor-name-list", _encoded(with_list_actor), _headers(), False),
        OddLetter("huge", _encoded(huge), None, True, plain_id(huge)),
        OddLetter("odd-headers", b"\x00\xff garbage", odd_headers, False),
        OddLetter("far-future-times", b"garbage", far_future, False),
        OddLetter("non-finite-numbers", _encoded(non_finite), None, False),
        OddLetter("no-properties", _encoded(plain), None, True, plain_id(plain)),
    ]


def plain_id(message: dict[str, Any]) -> str:
    return str(message["message_id"])


def publish_odd_letters(url: str, queue: str = "maintenance") -> list[OddLetter]:
    """Publish the corpus to ``queue``'s ``.XQ`` (confirmed), the last one with no properties at all."""
    letters = odd_letters()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for letter in letters:
            properties = (
                pika.BasicProperties()
                if letter.name == "no-properties"
                else pika.BasicProperties(delivery_mode=2, headers=letter.headers)
            )
            channel.basic_publish("", queue + ".XQ", letter.body, properties, mandatory=True)
    finally:
        connection.close()
    return letters
