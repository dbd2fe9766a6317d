"""Events without RabbitMQ: contracts, the wire form and its signature, and handlers on the StubBroker."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import dramatiq
import orjson
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.base import handler
from brokers.client import build_event
from brokers.settings import Settings
from contracts.errors import ContractError, UnknownActorError
from contracts.events import (
    HANDLERS,
    AttendanceMarked,
    Event,
    IepCreated,
    all_events,
    event_of,
    get_event,
    handler_fields,
    handler_message_id,
    register_handler,
)
from contracts.signing import Keyring, reseal_state, verify_message

KEY = Keyring(b"k")
SEEN: list[Event[Any]] = []


@handler("testing.on_iep_created", events=["iep.created"], time_limit=5_000, max_backoff=100, max_retries=0)
def remember(event: Event[IepCreated]) -> None:
    SEEN.append(event)


@dramatiq.actor(actor_name="testing.not_a_handler", queue_name="maintenance", max_retries=0)
def not_a_handler(**_kwargs: Any) -> None:
    SEEN.append(Event("wrong", "wrong", datetime.now(UTC), IepCreated(iep_id=0, user_id=0)))


def published(name: str, payload: dict[str, Any], key: Keyring = KEY, **kw: Any) -> dict[str, Any]:
    _, body = build_event(name, payload, signing_key=key, **kw)
    return dict(orjson.loads(body))


def test_the_four_events_and_their_fields() -> None:
    assert list(all_events()) == ["attendance.marked", "grade.updated", "iep.created", "user.created"]
    marked = get_event("attendance.marked").parse(
        {"user_id": 1, "course_id": 2, "day": "2026-12-04", "status": "late", "previous_status": "absent"}
    )
    assert marked == AttendanceMarked(
        user_id=1, course_id=2, day=date(2026, 12, 4), status="late", previous_status="absent"
    )
    assert get_event("iep.created").validate({"iep_id": 1, "user_id": 2}) == {
        "iep_id": 1,
        "user_id": 2,
        "coordinator_id": None,
    }


def test_an_invalid_event_names_the_field_and_an_unknown_one_the_known_events() -> None:
    with pytest.raises(ContractError, match="status"):
        build_event(
            "attendance.marked",
            {"user_id": 1, "course_id": 2, "day": "2026-12-04", "status": "gone"},
            signing_key=KEY,
        )
    with pytest.raises(ContractError, match="name: Extra inputs"):
        build_event("user.created", {"user_id": 1, "name": "extra fields are refused"}, signing_key=KEY)
    with pytest.raises(UnknownActorError, match=r"known events: .*user\.created"):
        build_event("user.deleted", {}, signing_key=KEY)
    with pytest.raises(ValueError, match="time-zone aware"):
        build_event("user.created", {"user_id": 1}, signing_key=KEY, occurred_at=datetime(2026, 12, 4))


def test_the_signature_holds_for_each_handlers_copy_and_its_retries_and_nothing_else() -> None:
    # Given an event as published, with its id and when it happened
    occurred = datetime(2026, 12, 4, 8, 30, tzinfo=UTC)
    fields = published("iep.created", {"iep_id": 4, "user_id": 5}, event_id="evt-9", occurred_at=occurred)
    assert (fields["queue_name"], fields["actor_name"], fields["message_id"]) == (
        "edujobs.events",
        "iep.created",
        "evt-9",
    )
    assert verify_message(KEY, fields) is None
    # When a worker makes it a handler's message, then a retry of it
    handler_fields(fields, "notifications.on_iep_created")
    fields["queue_name"] = "notifications.on_iep_created.DQ"
    fields["options"]["retries"] = 1
    reseal_state(KEY, fields)
    # Then it still verifies, with an id of that handler's own, and carries the event unchanged
    assert verify_message(KEY, fields) is None
    assert fields["message_id"] == handler_message_id("evt-9", "notifications.on_iep_created")
    assert fields["message_id"] != handler_message_id("evt-9", "testing.on_iep_created")
    event = event_of(fields["message_id"], fields["options"], fields["kwargs"])
    assert (event.id, event.name, event.occurred_at) == ("evt-9", "iep.created", occurred)
    assert event.payload == IepCreated(iep_id=4, user_id=5)
    # But any change to what the publisher signed does not verify
    for option, value in (("event", "user.created"), ("event_id", "evt-10"), ("occurred_at", 1)):
        changed = {**fields, "options": {**fields["options"], option: value}}
        assert verify_message(KEY, changed) is not None, option
    assert verify_message(KEY, {**fields, "kwargs": {"iep_id": 4, "user_id": 6, "coordinator_id": None}})


def test_a_handler_must_agree_with_the_bindings_table() -> None:
    assert HANDLERS["notifications.on_user_created"] == ("user.created",)
    with pytest.raises(ValueError, match="make them agree"):
        register_handler("notifications.on_user_created", ("iep.created",))
    with pytest.raises(UnknownActorError):
        register_handler("testing.on_nothing", ("no.such_event",))


def _enqueue(broker: StubBroker, fields: dict[str, Any]) -> None:
    broker.enqueue(dramatiq.Message(**{**fields, "args": ()}))


def test_on_the_stub_broker_a_handler_gets_the_event_and_another_actor_refuses_it(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker
) -> None:
    SEEN.clear()
    keyring = Settings().keyring()
    # Given an event made the handler's message, as the RabbitMQ consumer does
    fields = published("iep.created", {"iep_id": 4, "user_id": 5, "coordinator_id": 6}, keyring)
    handler_fields(fields, "testing.on_iep_created")
    fields["queue_name"] = "testing.on_iep_created"
    _enqueue(stub_broker, fields)
    stub_broker.join("testing.on_iep_created")
    stub_worker.join()
    # Then the handler ran with the event
    [event] = SEEN
    assert event.payload == IepCreated(iep_id=4, user_id=5, coordinator_id=6)
    # And the same signed event addressed to an actor that does not handle it is refused, not run
    wrong = published("iep.created", {"iep_id": 4, "user_id": 5}, keyring)
    wrong.update(actor_name="testing.not_a_handler", queue_name="maintenance")
    _enqueue(stub_broker, wrong)
    stub_broker.join("maintenance", fail_fast=False)
    stub_worker.join()
    assert len(SEEN) == 1
    [dead] = stub_broker.dead_letters
    assert dead.message_id == wrong["message_id"]


def test_a_signed_event_that_breaks_its_contract_is_dead_lettered_as_invalid_payload(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker
) -> None:
    from contracts.signing import sign_message
    from middleware.fate import death_of

    SEEN.clear()
    # Given an event signed with the key whose payload does not match iep.created (no user_id)
    fields = published("iep.created", {"iep_id": 4, "user_id": 5}, Settings().keyring())
    fields["kwargs"] = {"iep_id": 4}
    del fields["options"]["signature"]
    sign_message(Settings().keyring(), fields)
    handler_fields(fields, "testing.on_iep_created")
    fields["queue_name"] = "testing.on_iep_created"
    # When its handler's worker takes it
    _enqueue(stub_broker, fields)
    stub_broker.join("testing.on_iep_created", fail_fast=False)
    stub_worker.join()
    # Then the handler never runs: it is dead-lettered before, naming the field
    assert SEEN == []
    [dead] = stub_broker.dead_letters
    death = death_of(dead)
    assert death is not None and death.reason == "invalid_payload" and "user_id" in (death.error or "")


def test_every_handler_the_worker_declares_is_listed_in_the_bindings_table() -> None:
    import actors  # noqa: F401  (declares every actor and handler on the test process's broker)
    from contracts.registry import all_contracts

    # HANDLERS is what producers and operators' tools know; the worker's handlers must all be there
    declared = dramatiq.get_broker().get_declared_actors()
    handlers = {name for name in declared if not name.startswith("testing.") and name not in all_contracts()}
    assert {"notifications.on_iep_created", "notifications.on_user_created"} <= handlers
    assert handlers <= set(HANDLERS), "list every handler in contracts.events.HANDLERS"
    assert "testing.on_iep_created" not in HANDLERS  # a test's handler is bound in its process only
