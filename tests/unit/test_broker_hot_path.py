"""The worker's hot path: EdujobsBroker calls only the middleware that define a hook (in Dramatiq's
order, with its error handling, noticing middleware added later); the consumer's message proxy
reads fields directly; bodies are decoded fast and checked as strictly as before."""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import pytest
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from brokers import dlq
from brokers.consumer import EdujobsMessage, decode_message
from brokers.rabbitmq import EdujobsBroker
from contracts.signing import Keyring


class Recording(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_ack(self, broker: Any, message: Any) -> None:
        self.calls.append(f"before {self.name}")

    def after_ack(self, broker: Any, message: Any) -> None:
        self.calls.append(f"after {self.name}")


class Failing(Middleware):
    def before_ack(self, broker: Any, message: Any) -> None:
        raise RuntimeError("boom")


class Refusing(Middleware):
    def before_ack(self, broker: Any, message: Any) -> None:
        raise MiddlewareError("no")


class Silent(Middleware):
    """Defines no hook: never called."""


def broker_with(*middleware: Middleware) -> EdujobsBroker:
    return EdujobsBroker(
        url="amqp://guest:guest@127.0.0.1:1/",
        max_priority=9,
        dead_letter_ttl_ms=1000,
        worker_name="test",
        keyring=Keyring(b"test"),
        middleware=list(middleware),
    )


def test_hooks_run_in_order_and_after_hooks_in_reverse() -> None:
    calls: list[str] = []
    broker = broker_with(Recording("a", calls), Silent(), Recording("b", calls))

    broker.emit_before("ack", None)
    broker.emit_after("ack", None)

    assert calls == ["before a", "before b", "after b", "after a"]
    assert len(broker._hooks("before_ack")) == 2
    assert broker._hooks("before_process_message") == ()


def test_a_middleware_added_later_is_called() -> None:
    calls: list[str] = []
    broker = broker_with(Recording("a", calls))
    broker.emit_before("ack", None)

    broker.add_middleware(Recording("late", calls))
    broker.emit_before("ack", None)

    assert calls == ["before a", "before a", "before late"]


def test_a_failing_hook_is_logged_and_the_next_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    broker = broker_with(Failing(), Recording("b", calls))

    with caplog.at_level(logging.CRITICAL):
        broker.emit_before("ack", None)

    assert calls == ["before b"]
    assert "Unexpected failure in before_ack" in caplog.text


def test_a_middleware_error_stops_the_signal() -> None:
    calls: list[str] = []
    broker = broker_with(Refusing(), Recording("b", calls))

    with pytest.raises(MiddlewareError):
        broker.emit_before("ack", None)
    assert calls == []


def test_the_consumers_message_reads_its_fields_without_the_proxy() -> None:
    message: Message[Any] = Message(
        queue_name="q", actor_name="a.b", args=(1,), kwargs={"x": 2}, options={"retries": 1}
    )
    proxy = EdujobsMessage(False, 7, message, consumer=cast(Any, None))

    assert "options" in vars(proxy) and proxy.options is message.options
    assert (proxy.queue_name, proxy.actor_name, proxy.args, proxy.kwargs) == ("q", "a.b", (1,), {"x": 2})
    assert (proxy.message_id, proxy.message_timestamp) == (message.message_id, message.message_timestamp)
    proxy.options["retries"] = 2  # Retries changes options in place: the message sees it
    assert message.options["retries"] == 2 and proxy.encode() == message.encode()
    # And it prints without its arguments, wherever Dramatiq logs it
    assert str(proxy) == repr(proxy) == f"a.b({message.message_id})"


def test_a_message_decoded_with_a_tuple_of_arguments_is_accepted() -> None:
    # Given the fields an encoder other than JSON gives back (Dramatiq's PickleEncoder keeps tuples)
    fields = {"queue_name": "q", "actor_name": "a.b", "args": (1, 2), "kwargs": {}, "options": {},
              "message_id": "m", "message_timestamp": 1}  # fmt: skip
    # Then its shape is that of a message, as Message.decode accepts it
    assert dlq.shape_problem(fields) is None


def test_a_body_orjson_refuses_is_still_read_as_dramatiq_reads_it() -> None:
    # Given a body with a NaN argument, which Python's json reads and orjson refuses
    body = (
        b'{"queue_name":"q","actor_name":"a.b","args":[NaN],"kwargs":{},"options":{},'
        b'"message_id":"m","message_timestamp":1}'
    )

    message = decode_message(body)

    assert message.actor_name == "a.b" and math.isnan(message.args[0])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            b'{"queue_name":"q","actor_name":"","args":[],"kwargs":{},"options":{},'
            b'"message_id":"m","message_timestamp":1}',
            "is empty",
        ),
        (
            b'{"queue_name":"q","actor_name":"a","args":{},"kwargs":{},"options":{},'
            b'"message_id":"m","message_timestamp":1}',
            "'args' is an object",
        ),
        (b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{}}', "'message_id'"),
        (b"[1, 2]", "expected a JSON object"),
    ],
)
def test_a_misshapen_body_is_refused_with_what_is_wrong(body: bytes, problem: str) -> None:
    with pytest.raises(DecodeError) as raised:
        decode_message(body)
    assert problem in str(raised.value.__cause__)
