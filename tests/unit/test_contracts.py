"""Contracts: producers learn of bad payloads before anything is published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brokers.client import build_message
from contracts import all_contracts, get_contract
from contracts.errors import ContractError, UnknownActorError
from contracts.export import export_schemas
from contracts.signing import verify_message


def test_a_bad_field_is_named_in_the_error() -> None:
    # Given the send_email contract
    contract = get_contract("notifications.send_email")
    # When a payload has a string user id and an unknown field
    with pytest.raises(ContractError) as error:
        contract.validate({"user_id": "seven", "template": "welcome", "colour": "red"})
    # Then the error names both fields
    assert "user_id" in str(error.value)
    assert "colour" in str(error.value)


def test_an_unknown_actor_lists_the_known_ones() -> None:
    with pytest.raises(UnknownActorError, match=r"notifications\.send_email"):
        get_contract("notifications.send_fax")


def test_export_writes_one_schema_per_actor(tmp_path: Path) -> None:
    # When the contracts are exported
    written = export_schemas(tmp_path)
    # Then each actor has a JSON Schema naming its queue
    assert {p.name for p in written} == {f"{name}.schema.json" for name in all_contracts()}
    schema = json.loads((tmp_path / "notifications.send_email.schema.json").read_text())
    assert schema["x-edujobs"]["queue"] == "notifications"
    assert "user_id" in schema["required"]


def test_a_built_message_is_dramatiq_format_signed_and_prioritised() -> None:
    # Given a payload and a priority override
    contract = get_contract("notifications.send_email")
    message_id, routing_key, body, priority = build_message(
        contract, {"user_id": 3, "template": "welcome"}, signing_key=b"k", priority="critical"
    )
    message = json.loads(body)
    # Then the message is Dramatiq's JSON format for the right queue and priority
    assert routing_key == "notifications"
    assert message["actor_name"] == "notifications.send_email"
    assert message["kwargs"] == {
        "user_id": 3,
        "template": "welcome",
        "context": {},
        "idempotency_key": None,
        "attachments": [],
    }
    assert message["message_id"] == message_id
    assert priority == 9 and message["options"]["broker_priority"] == 9
    # And it carries a signature that checks out with the key, and not with another
    assert verify_message(b"k", message) is None
    assert verify_message(b"other", message) is not None


def test_a_delayed_message_goes_to_the_delay_queue_with_an_eta() -> None:
    contract = get_contract("notifications.send_email")
    _, routing_key, body, _ = build_message(
        contract, {"user_id": 3, "template": "welcome"}, signing_key=b"k", delay=3600
    )
    message = json.loads(body)
    assert routing_key == "notifications.DQ"
    assert message["options"]["eta"] >= message["message_timestamp"] + 3_600_000


def test_the_same_idempotency_key_gives_the_same_message_id() -> None:
    contract = get_contract("notifications.send_email")
    payload = {"user_id": 3, "template": "welcome"}
    first = build_message(contract, payload, signing_key=b"k", idempotency_key="welcome:3")[0]
    again = build_message(contract, payload, signing_key=b"k", idempotency_key="welcome:3")[0]
    other = build_message(contract, payload, signing_key=b"k", idempotency_key="welcome:4")[0]
    assert first == again != other


def test_an_unknown_priority_is_refused() -> None:
    contract = get_contract("notifications.send_email")
    with pytest.raises(ValueError, match="critical, high, normal, low, bulk"):
        build_message(contract, {"user_id": 3, "template": "welcome"}, signing_key=b"k", priority="urgent")


def test_a_naive_eta_is_refused() -> None:
    from datetime import datetime

    contract = get_contract("notifications.send_email")
    with pytest.raises(ValueError, match="time-zone aware"):
        build_message(
            contract, {"user_id": 3, "template": "welcome"}, signing_key=b"k", eta=datetime(2030, 1, 1)
        )
