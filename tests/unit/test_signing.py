"""Message signatures (``contracts.signing``): what they cover, the canonical form, key rotation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.client import message_id_for
from contracts.signing import (
    MAX_SAFE_INTEGER,
    Keyring,
    SignatureError,
    canonical_json,
    option_problem,
    reseal_state,
    sender_document,
    sign_message,
    state_document,
    verify_message,
)

KEY = b"test-signing-key"
VECTORS = Path(__file__).resolve().parents[2] / "docs" / "signature-vectors.json"
SENDER_FIELDS = ("message_id", "actor_name", "queue_name", "args", "kwargs", "message_timestamp", "options")


def message(**options: Any) -> dict[str, Any]:
    return {
        "queue_name": "notifications",
        "actor_name": "notifications.send_email",
        "args": [],
        "kwargs": {"user_id": 7, "template": "welcome"},
        "options": {"broker_priority": 5, "priority_name": "normal", **options},
        "message_id": "5a3e0a6b-7c1d-5f2e-9b8a-0c4d2e6f8a10",
        "message_timestamp": 1764770400000,
    }


def signed(**options: Any) -> dict[str, Any]:
    fields = message(**options)
    sign_message(KEY, fields)
    return fields


# -- the canonical form ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_the_canonical_form_is_rfc_8785_for_any_json(value: dict[str, Any]) -> None:
    # The fast path (orjson) must give RFC 8785's bytes exactly, or step aside for the library.
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"k": 1.0},
        {"k": -0.0},
        {"k": 1e21},
        {"k": 1e-7},
        {"k": [1, 2.5]},
        {"\U0001f600": 1, "\ue000": 2},  # UTF-16 order differs from code-point order here
        {"text": "a:1.5 is not a float"},
        {"esc": '\u0000\u001f\u007f\u2028"\\/'},
    ],
)
def test_values_off_the_fast_path_are_still_canonical(value: dict[str, Any]) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"n": MAX_SAFE_INTEGER + 1},
        {"n": float("nan")},
        {"n": None, "deep": [{"x": float("inf")}]},
        {"s": "\ud800"},
    ],
)
def test_what_json_cannot_carry_exactly_cannot_be_signed(value: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        canonical_json(value)


def test_the_published_vectors_check_out() -> None:
    # Given the test vectors other languages' producers are tested against
    vectors = json.loads(VECTORS.read_text())["vectors"]
    assert len(vectors) >= 3
    for vector in vectors:
        fields = copy.deepcopy(vector["message"])
        document = sender_document(**{k: fields[k] for k in SENDER_FIELDS})
        # Then the canonical documents and the signatures are byte for byte those published
        assert canonical_json(document).decode() == vector["sender_document"], vector["name"]
        sign_message(vector["key"].encode(), fields)
        assert fields["options"]["signature"] == vector["signature"], vector["name"]
        state = state_document(vector["signature"], fields["options"])
        if state is None:
            assert "state_signature" not in vector
        else:
            assert canonical_json(state).decode() == vector["state_document"]
            assert fields["options"]["state_signature"] == vector["state_signature"]
        assert verify_message(vector["key"].encode(), fields) is None


def test_the_published_vectors_cover_the_edge_cases() -> None:
    # Numbers at the edges, key order outside the BMP, escapes, a key past HMAC's block size,
    # every option: a producer that passes them all has nothing left to guess.
    published = json.loads(VECTORS.read_text())
    names = " ".join(v["name"] for v in published["vectors"])
    for topic in ("numbers", "UTF-16", "escapes", "rotation", "every option"):
        assert topic in names
    assert len(published["vectors"][-2]["key"].encode()) > 64


def test_what_the_vectors_say_must_be_refused_is_refused() -> None:
    refused = json.loads(VECTORS.read_text())["refused"]
    assert len(refused) >= 4
    for item in refused:
        with pytest.raises(SignatureError):
            canonical_json(json.loads(item["json"]))


def test_the_published_message_ids_are_the_clients() -> None:
    # The id a client derives from an idempotency key, so that producers in any language agree
    for item in json.loads(VECTORS.read_text())["message_ids"]:
        assert message_id_for(item["actor_name"], item["idempotency_key"]) == item["message_id"]


# -- what a signature covers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", "another"),
        ("actor_name", "notifications.send_sms"),
        ("queue_name", "media"),
        ("args", [1]),
        ("kwargs", {"user_id": 8, "template": "welcome"}),
        ("message_timestamp", 1),
    ],
)
def test_changing_the_envelope_breaks_the_signature(field: str, value: object) -> None:
    fields = signed()
    fields[field] = value
    assert verify_message(KEY, fields) == (
        "the signature does not match the message (tampered, or signed with another key)"
    )


def test_the_delay_queue_name_is_the_same_queue() -> None:
    # A delayed message moves between Q.DQ and Q: its signature holds in both.
    fields = signed()
    fields["queue_name"] = "notifications.DQ"
    assert verify_message(KEY, fields) is None


@pytest.mark.parametrize(
    "change",
    [
        {"idempotency_key": "other"},
        {"priority_name": "critical"},
        {"broker_priority": 9},
        {"max_age": 1},
        {"time_limit": 1},
        {"max_retries": 9},
        {"min_backoff": 0},
        {"max_backoff": 1},
        {"schedule": "nightly"},
        {"not_before": 1},
        {"circuit_breaker": "twilio"},
    ],
)
def test_every_sender_option_is_covered(change: dict[str, Any]) -> None:
    fields = signed(idempotency_key="key")
    fields["options"].update(change)
    assert verify_message(KEY, fields) is not None


def test_the_delivery_state_is_covered_by_its_own_signature() -> None:
    # Given a message with a delivery state
    fields = signed(eta=1764770460000)
    assert verify_message(KEY, fields) is None
    # When its state changes, or state is added without a state signature, it no longer checks out
    changed = copy.deepcopy(fields)
    changed["options"]["eta"] = 0
    assert "state signature does not match" in str(verify_message(KEY, changed))
    added = copy.deepcopy(fields)
    added["options"]["retries"] = 0
    assert "state signature does not match" in str(verify_message(KEY, added))
    unsigned = signed()
    unsigned["options"]["retries"] = 1
    assert verify_message(KEY, unsigned) == "its delivery state (retries) is not signed"
    # And a state signature moved onto another message does not check out there
    other = signed(eta=1764770460000, idempotency_key="other")
    other["options"]["state_signature"] = fields["options"]["state_signature"]
    assert verify_message(KEY, other) is not None


def test_a_worker_reseals_the_state_of_a_verified_message_only() -> None:
    # Given a received, verified message whose retry the worker prepares
    fields = signed()
    fields["options"].update(retries=1, eta=1764770460000)
    reseal_state(KEY, fields)
    assert verify_message(KEY, fields) is None
    # When the state goes, so does the state signature
    del fields["options"]["retries"], fields["options"]["eta"]
    reseal_state(KEY, fields)
    assert "state_signature" not in fields["options"] and verify_message(KEY, fields) is None
    # And a message whose sender signature does not match is refused, not signed
    fields["kwargs"] = {"user_id": 666, "template": "welcome"}
    with pytest.raises(SignatureError, match="refusing to sign its state"):
        reseal_state(KEY, fields)
    unsigned = message(retries=1)
    with pytest.raises(SignatureError):
        reseal_state(KEY, unsigned)


def test_a_message_is_never_signed_twice() -> None:
    with pytest.raises(SignatureError, match="signed already"):
        sign_message(KEY, signed())


# -- keys -------------------------------------------------------------------------------------------


def test_a_rotation_accepts_the_listed_keys_and_signs_with_the_current_one() -> None:
    old, new = b"old-key", b"new-key"
    # Step 1: workers accept the new key while everyone signs with the old one
    step1 = Keyring(old, (new,))
    # Step 2: everyone signs with the new key; the old one is still accepted
    step2 = Keyring(new, (old,))
    # Step 3: the old key is dropped
    step3 = Keyring(new)
    by_old, by_new = message(), message()
    sign_message(old, by_old)
    sign_message(new, by_new)
    assert verify_message(step1, by_old) is None and verify_message(step1, by_new) is None
    assert verify_message(step2, by_old) is None and verify_message(step2, by_new) is None
    assert verify_message(step3, by_new) is None and verify_message(step3, by_old) is not None
    # And a retry resealed mid-rotation carries a state signature of the current key
    by_old["options"]["retries"] = 1
    reseal_state(step2, by_old)
    assert verify_message(step3, by_old) is not None  # the sender's old-key signature is kept
    assert verify_message(step2, by_old) is None


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        Keyring(b"")


# -- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"pipe_target": {}}, "pipelines are not supported"),
        ({"on_success": "x"}, "callbacks are not supported"),
        ({"throws": ["PermanentError"]}, "declares its permanent errors itself"),
        ({"dead_letter": {}}, "written by the worker"),
        ({"whatever": 1}, "edujobs reads only"),
        ({"eta": "tomorrow"}, "'eta' must be a number of ms"),
        ({"eta": True}, "'eta' must be a number of ms"),
        ({"retries": -1}, "'retries' must be an integer from 0"),
        ({"retries": 1.5}, "'retries' must be an integer"),
        ({"broker_priority": 10}, "'broker_priority' must be an integer from 0 to 9"),
        ({"priority_name": "urgent"}, "'priority_name' must be one of critical"),
        ({"idempotency_key": ""}, "'idempotency_key' must be a string"),
        ({"circuit_breaker": ["sendgrid", 3]}, "a provider name or a list"),
        ({"requeued_from": {"reason": ["x"]}}, "'requeued_from' must be an object of strings"),
        ({"signature": "not hex"}, "a hex HMAC-SHA256"),
    ],
)
def test_an_option_edujobs_does_not_read_or_of_the_wrong_type_is_refused(
    options: dict[str, Any], problem: str
) -> None:
    assert problem in str(option_problem(options))
    with pytest.raises(SignatureError, match=r"not accepted|must be|signed already"):
        sign_message(KEY, message(**options))


def test_the_options_edujobs_sets_are_accepted() -> None:
    assert option_problem(signed(idempotency_key="k", eta=1, not_before=1, retries=0)["options"]) is None
