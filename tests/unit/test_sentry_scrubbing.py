"""Scrubbing: events as the Sentry SDK builds them for a worker lose arguments and personal data."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from middleware.scrubbing import FILTERED, argument_values, is_sensitive_key, scrub_event, scrub_text

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/edujobs/actors/notifications/actors.py", line 41, in send_sms\n'
    "    service.send_sms(user_id, phone, body)\n"
    "actors.notifications.errors.SmsError: Twilio refused +1 415 555 0123 for grace.hopper@example.org\n"
)


def integration_event() -> dict[str, Any]:
    """An error event shaped like the one Sentry's Dramatiq integration sends from inside an actor."""
    return {
        "event_id": "3f2a9b8c7d6e4f5a8b9c0d1e2f3a4b5c",
        "level": "error",
        "platform": "python",
        "sdk": {"name": "sentry.python", "version": "2.75.0"},
        "server_name": "worker-1",
        "transaction": "notifications.send_sms",
        "fingerprint": ["{{ default }}"],
        "exception": {
            "values": [
                {
                    "type": "SmsError",
                    "value": "Twilio refused +1 415 555 0123 for grace.hopper@example.org (Grace Hopper)",
                    "mechanism": {"type": "dramatiq", "handled": False},
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "send_sms",
                                "lineno": 41,
                                "context_line": "    service.send_sms(user_id, phone, body)",
                                "vars": {
                                    "phone": "'+14155550123'",
                                    "user_id": "42",
                                    "full_name": "'Grace Hopper'",
                                },
                            }
                        ]
                    },
                }
            ]
        },
        "contexts": {
            "trace": {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
            "os": {"name": "Linux"},
            "runtime": {"name": "CPython", "version": "3.11.7"},
            "dramatiq": {
                "type": "dramatiq",
                "data": {
                    "queue_name": "notifications",
                    "actor_name": "notifications.send_sms",
                    "args": [42],
                    "kwargs": {
                        "phone": "+14155550123",
                        "full_name": "Grace Hopper",
                        "body": "Your code is 913377",
                    },
                    "options": {
                        "retries": 2,
                        "signature": "9f" * 32,
                        "traceback": TRACEBACK,
                        "_sentry_headers": {
                            "sentry-trace": "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"
                        },
                    },
                    "message_id": "5c1f8a52-4d0e-4b6b-9a53-8f6ad0f5b7e1",
                    "message_timestamp": 1718000000000,
                },
            },
        },
        "extra": {
            "dramatiq_message_id": "5c1f8a52-4d0e-4b6b-9a53-8f6ad0f5b7e1",
            "sys.argv": ["dramatiq", "actors"],
        },
        "breadcrumbs": {
            "values": [
                {
                    "type": "log",
                    "category": "actors.notifications.providers.twilio",
                    "message": "POST https://api.twilio.com with Authorization: Bearer abcdef0123456789XYZ",
                    "data": {"to": "+14155550123", "status": 400},
                },
                {
                    "type": "http",
                    "category": "httplib",
                    "data": {"url": "https://api.twilio.com", "method": "POST"},
                },
            ]
        },
        "user": {"id": "42", "email": "grace.hopper@example.org", "ip_address": "10.0.0.7"},
    }


def test_the_dramatiq_context_keeps_what_identifies_the_message_but_not_its_arguments() -> None:
    # Given an event from inside an actor, with the whole message in contexts.dramatiq.data
    event = scrub_event(integration_event())
    # Then the arguments are gone, the message's identity and retry count stay
    data = event["contexts"]["dramatiq"]["data"]
    assert "args" not in data and "kwargs" not in data
    assert data["actor_name"] == "notifications.send_sms"
    assert data["queue_name"] == "notifications"
    assert data["message_id"] == "5c1f8a52-4d0e-4b6b-9a53-8f6ad0f5b7e1"
    assert data["options"]["retries"] == 2
    assert data["options"]["signature"] == FILTERED
    # And the traceback in its options lost the phone number and the e-mail address
    assert "+1 415 555 0123" not in data["options"]["traceback"]
    assert "grace.hopper@example.org" not in data["options"]["traceback"]
    assert "line 41, in send_sms" in data["options"]["traceback"]


def test_argument_values_are_redacted_from_exception_messages_even_when_no_pattern_knows_them() -> None:
    event = scrub_event(integration_event())
    [exception] = event["exception"]["values"]
    # "Grace Hopper" was an argument: a name no pattern recognises, filtered anyway
    assert exception["value"] == f"Twilio refused {FILTERED} for {FILTERED} ({FILTERED})"
    assert exception["type"] == "SmsError"
    assert "vars" not in exception["stacktrace"]["frames"][0]
    assert (
        exception["stacktrace"]["frames"][0]["context_line"] == "    service.send_sms(user_id, phone, body)"
    )


def test_nothing_personal_is_left_anywhere_and_the_structure_is_intact() -> None:
    original = integration_event()
    event = scrub_event(copy.deepcopy(original))
    text = json.dumps(event)
    for secret in (
        "Grace Hopper",
        "grace.hopper",
        "4155550123",
        "415 555 0123",
        "913377",
        "abcdef0123456789XYZ",
    ):
        assert secret not in text
    # The parts Sentry needs to place the event are untouched
    for key in ("event_id", "level", "platform", "sdk", "server_name", "transaction", "fingerprint"):
        assert event[key] == original[key]
    assert event["contexts"]["trace"] == original["contexts"]["trace"]
    assert event["contexts"]["os"] == {"name": "Linux"}
    assert event["contexts"]["runtime"]["name"] == "CPython"
    assert event["user"] == {"id": "42"}
    crumbs = event["breadcrumbs"]["values"]
    assert crumbs[0]["message"] == f"POST https://api.twilio.com with Authorization: Bearer {FILTERED}"
    assert crumbs[0]["data"] == {"to": FILTERED, "status": 400}
    assert crumbs[1] == original["breadcrumbs"]["values"][1]
    assert event["extra"] == original["extra"]


def test_values_of_personal_and_secret_keys_are_filtered_in_extra_and_custom_contexts() -> None:
    event = scrub_event(
        {
            "extra": {
                "student": {"first_name": "Ada", "lastName": "Lovelace", "name": "Ada Lovelace", "id": 7},
                "provider": {
                    "api_key": "k-123",
                    "Authorization": "Basic Zm9vOmJhcg==",
                    "queue_name": "media",
                },
                "password": "hunter2",
                "device_token": "fcm-token-1",
            },
            "contexts": {"guardian": {"phone_number": "0612345678", "email": "parent@example.com"}},
        }
    )
    assert event["extra"]["student"] == {
        "first_name": FILTERED,
        "lastName": FILTERED,
        "name": FILTERED,
        "id": 7,
    }
    assert event["extra"]["provider"] == {
        "api_key": FILTERED,
        "Authorization": FILTERED,
        "queue_name": "media",
    }
    assert event["extra"]["password"] == FILTERED
    assert event["extra"]["device_token"] == FILTERED
    assert event["contexts"]["guardian"] == {"phone_number": FILTERED, "email": FILTERED}


def test_log_events_and_transactions_are_scrubbed_too() -> None:
    event = scrub_event(
        {
            "logentry": {
                "message": "Could not notify %s",
                "formatted": "Could not notify carol@example.net",
                "params": ["carol@example.net"],
            },
            "message": "Could not notify carol@example.net",
            "tags": {"recipient_domain": "example.net", "who": "carol@example.net"},
            "spans": [{"description": "SELECT 1 -- +33612345678", "data": {"email": "carol@example.net"}}],
        }
    )
    assert event["logentry"] == {
        "message": "Could not notify %s",
        "formatted": f"Could not notify {FILTERED}",
        "params": [FILTERED],
    }
    assert event["message"] == f"Could not notify {FILTERED}"
    assert event["tags"] == {"recipient_domain": "example.net", "who": FILTERED}
    assert event["spans"] == [{"description": f"SELECT 1 -- {FILTERED}", "data": {"email": FILTERED}}]


@pytest.mark.parametrize(
    "text",
    [
        "call +33 6 12 34 56 78 now",
        "call +14155550123 now",
        "call (415) 555-0123 now",
        "call 415-555-0123 now",
        "call 415.555.0123 now",
        "call 06 12 34 56 78 now",
        "call 0612345678 now",
        "call +44 (0)20 7946 0958 now",
    ],
)
def test_phone_numbers_in_their_usual_formats_are_filtered(text: str) -> None:
    assert scrub_text(text) == f"call {FILTERED} now"


@pytest.mark.parametrize(
    "text",
    [
        "at 2024-01-15 10:20:30, attempt 3 of 5",
        "connecting to 127.0.0.1:5672 and 192.168.100.200",
        "sentry-sdk 2.75.0, dramatiq 2.2.1",
        'File "/srv/edujobs/actors/media/transcode.py", line 1234, in run',
        "message 5c1f8a52-4d0e-4b6b-9a53-8f6ad0f5b7e1 at 1718000000000 for user 123456789",
        "ratio 0.123456789, took 3.14159265358 s, 1,234,567.89 bytes",
        "the body is not a Dramatiq message (23 bytes): Expecting value: line 1 column 1 (char 0)",
        "/srv/edujobs/site-packages/sentry_sdk/integrations/dramatiq.py",
    ],
)
def test_numbers_that_are_not_phone_numbers_and_ordinary_text_are_kept(text: str) -> None:
    assert scrub_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HTTP 401 with key SG.abcdefghij_KLMNOP.qrstuvwxyz0123", f"HTTP 401 with key {FILTERED}"),
        ("Authorization: Bearer abcdef0123456789", f"Authorization: Bearer {FILTERED}"),
        ("password=hunter2&user=7", f"password={FILTERED}&user=7"),
        ('{"api_key": "abc123def"}', f'{{"api_key": "{FILTERED}"}}'),
        ("amqp://edujobs:s3cret@rabbit:5672/%2F", f"amqp://{FILTERED}@rabbit:5672/%2F"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijk", f"jwt {FILTERED}"),
        ("hmac 0123456789abcdef0123456789abcdef0123", f"hmac {FILTERED}"),
        ("secret QWxhZGRpbjpvcGVuIHNlc2FtZQ9xYz12AbCdEf==", f"secret {FILTERED}"),
        ("twilio AC0123456789abcdef0123456789abcdef", f"twilio {FILTERED}"),
        ("fcm AIzaSyA-1234567890abcdefghijklmnopqrstu", f"fcm {FILTERED}"),
    ],
)
def test_tokens_and_secrets_are_filtered(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_argument_values_worth_redacting() -> None:
    # Strings and long numbers are; small numbers, booleans and short words would match everywhere
    values = argument_values(
        [42, True, "en"], {"name": "Grace Hopper", "phone": 33612345678, "tags": ["vip"]}
    )
    assert values == ["Grace Hopper", "33612345678", "vip"]
    # Only whole words are redacted: an argument "email" does not eat into "send_email"
    assert scrub_text("send_email could not email", ["email"]) == f"send_email could not {FILTERED}"


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("name", True),
        ("first_name", True),
        ("studentName", True),
        ("email", True),
        ("phone_number", True),
        ("device_token", True),
        ("apiKey", True),
        ("signing_key", True),
        ("Authorization", True),
        ("actor_name", False),
        ("queue_name", False),
        ("template_name", False),
        ("message_id", False),
        ("idempotency_key", False),
        ("retries", False),
        ("fingerprint", False),
    ],
)
def test_which_keys_are_personal_or_secret(key: str, sensitive: bool) -> None:
    assert is_sensitive_key(key) is sensitive
