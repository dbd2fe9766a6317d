"""Circuit breakers: when they open, what counts, half-open trials, threads, Redis down, and the
middleware that delays a message instead of spending its retries (StubBroker)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware

from contracts.errors import (
    PermanentError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
)
from middleware.breaker_storage import (
    Breaker,
    BreakerRegistry,
    CircuitOpenError,
    get_breakers,
    guard,
    install,
)
from middleware.circuit_breakers import CircuitBreakers, UnknownProviderError
from middleware.retries import Retries


@pytest.fixture
def registry() -> BreakerRegistry:
    return BreakerRegistry(fail_max=3, reset_timeout=60)


def call(breaker: Breaker, outcome: BaseException | None = None) -> None:
    with breaker.guard():
        if outcome is not None:
            raise outcome


def fail(breaker: Breaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ProviderUnavailableError):
            call(breaker, ProviderUnavailableError("503 from the provider"))


def expire(breaker: Breaker) -> None:
    """Move the opening back past the reset timeout, as if that long had passed."""
    breaker.storage.opened_at = datetime.now(UTC) - timedelta(seconds=breaker.reset_timeout + 1)


def test_opens_after_fail_max_transient_failures_then_refuses_without_calling(
    registry: BreakerRegistry,
) -> None:
    # Given the sendgrid breaker (3 failures open it) and a provider that is down
    breaker = registry.get("sendgrid")
    # When two calls fail, it is still closed
    fail(breaker, 2)
    assert breaker.state == "closed"
    # And the third failure opens it
    fail(breaker)
    assert breaker.state == "open"
    # Then the next call is refused before the provider is called, saying when to come back
    called = []
    with pytest.raises(CircuitOpenError) as refused, breaker.guard():
        called.append(True)
    assert called == []
    assert refused.value.provider == "sendgrid"
    assert 55 < refused.value.retry_after <= 60
    assert registry.is_open("sendgrid") and not registry.is_open("twilio")


def test_permanent_and_rate_limit_errors_do_not_count(registry: BreakerRegistry) -> None:
    # Given two failures in a row
    breaker = registry.get("twilio")
    fail(breaker, 2)
    # When the provider then answers with a 4xx and a 429 (it is up: these count as successes)
    for answer in (ProviderRejectedError("400 bad number"), RateLimitedError("429", retry_after=2)):
        with pytest.raises(type(answer)):
            call(breaker, answer)
    # Then the run of failures starts again: two more failures leave it closed
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.storage.counter == 2


def test_errors_that_say_nothing_about_the_provider_count_neither_way(registry: BreakerRegistry) -> None:
    breaker = registry.get("fcm")
    fail(breaker, 2)
    with pytest.raises(KeyError):
        call(breaker, KeyError("a bug of ours"))
    assert breaker.storage.counter == 2
    fail(breaker)
    assert breaker.state == "open"


def test_half_opens_after_the_reset_timeout_with_one_trial_that_closes_it(registry: BreakerRegistry) -> None:
    # Given an open breaker whose reset timeout has passed
    breaker = registry.get("sendgrid")
    fail(breaker, 3)
    expire(breaker)
    assert registry.retry_after("sendgrid") == 0
    # When a trial call is under way
    trial = breaker.before_call()
    assert trial is True
    assert breaker.state == "half-open"
    # Then other callers wait for it, briefly
    with pytest.raises(CircuitOpenError) as waiting:
        breaker.before_call()
    assert waiting.value.retry_after == breaker.trial_wait
    # And its success closes the breaker for everyone
    breaker.on_success(trial=True)
    assert breaker.state == "closed"
    call(breaker)
    assert breaker.transitions == {"open": 1, "half-open": 1, "closed": 1}


def test_a_failed_trial_opens_the_breaker_again(registry: BreakerRegistry) -> None:
    breaker = registry.get("storage")
    fail(breaker, 3)
    expire(breaker)
    fail(breaker)  # the trial
    assert breaker.state == "open"
    assert 55 < breaker.retry_after() <= 60


def test_eight_threads_are_inside_one_guard_at_once(registry: BreakerRegistry) -> None:
    # Given 8 threads calling one provider through its breaker, each call waiting for the 7 others
    # to be inside their call too (pybreaker's own call() holds a lock around it: this would break)
    breaker = registry.get("sendgrid")
    all_inside = threading.Barrier(8, timeout=10)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with breaker.guard():
                all_inside.wait()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    # Then all 8 were inside the guarded call at the same time
    assert errors == []
    assert breaker.state == "closed"


def test_redis_down_keeps_the_state_in_the_process(caplog: pytest.LogCaptureFixture) -> None:
    # Given breakers configured with a Redis that does not answer (a closed port)
    registry = BreakerRegistry(fail_max=2, redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2)
    breaker = registry.get("sendgrid")
    # When the provider fails twice
    with caplog.at_level(logging.WARNING, logger="middleware.breaker_storage"):
        fail(breaker, 2)
        # Then the breaker opened all the same, in this process
        assert breaker.state == "open"
        with pytest.raises(CircuitOpenError):
            call(breaker)
    assert not breaker.storage.shared  # type: ignore[attr-defined]
    # And the missing Redis was said once, not at every call
    unanswered = [r for r in caplog.records if "Redis does not answer" in r.getMessage()]
    assert len(unanswered) == 1
    assert registry.claim("anything") is True


def test_listeners_hear_each_transition_and_a_failing_one_does_no_harm(
    registry: BreakerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[tuple[str, str | None, str]] = []

    def broken(provider: str, old: str | None, new: str) -> None:
        raise RuntimeError("listener bug")

    registry.add_listener(broken)
    registry.add_listener(lambda provider, old, new: heard.append((provider, old, new)))
    breaker = registry.get("twilio")
    with caplog.at_level(logging.INFO, logger="middleware.breaker_storage"):
        fail(breaker, 3)
        expire(breaker)
        call(breaker)
    assert heard == [
        ("twilio", "closed", "open"),
        ("twilio", "open", "half-open"),
        ("twilio", "half-open", "closed"),
    ]
    levels = {r.getMessage(): r.levelname for r in caplog.records if "Circuit breaker" in r.getMessage()}
    assert levels["Circuit breaker twilio: closed -> open."] == "WARNING"
    assert levels["Circuit breaker twilio: half-open -> closed."] == "INFO"
    # At boot, listeners hear where every breaker stands
    heard.clear()
    registry.announce()
    assert ("twilio", None, "closed") in heard and len(heard) == 4


def test_the_module_guard_uses_the_installed_breakers(registry: BreakerRegistry) -> None:
    previous = install(registry)
    try:
        assert get_breakers() is registry
        fail(registry.get("fcm"), 3)
        with pytest.raises(CircuitOpenError), guard("fcm"):
            pass
        with pytest.raises(KeyError, match="known: sendgrid, twilio, fcm, storage"), guard("sendgrd"):
            pass
    finally:
        if previous is not None:
            install(previous)


def test_a_service_falls_back_to_the_next_channel_while_a_breaker_is_open(registry: BreakerRegistry) -> None:
    # Given email's breaker open
    fail(registry.get("sendgrid"), 3)
    sent: list[str] = []

    def notify(channels: list[str]) -> str:
        # The documented pattern: try each of the user's channels, skipping those whose breaker is open
        for channel in channels:
            try:
                with registry.guard(channel):
                    sent.append(channel)
                return channel
            except CircuitOpenError:
                continue
        raise PermanentError("no channel available")

    # When a notification goes to a user who prefers email, then SMS
    # Then it goes out by SMS
    assert notify(["sendgrid", "twilio"]) == "twilio"
    assert sent == ["twilio"]


# -- the middleware, on a StubBroker ------------------------------------------------------------


class EnqueueRecorder(Middleware):
    def __init__(self) -> None:
        self.delayed: list[tuple[Message[Any], int | None]] = []
        self.event = threading.Event()

    def before_enqueue(self, broker: dramatiq.Broker, message: Message[Any], delay: int | None) -> None:
        if delay:
            self.delayed.append((message, delay))
            self.event.set()


@pytest.fixture
def make_broker() -> Iterator[Callable[[BreakerRegistry], tuple[StubBroker, EnqueueRecorder]]]:
    previous = get_breakers()

    def make(registry: BreakerRegistry) -> tuple[StubBroker, EnqueueRecorder]:
        recorder = EnqueueRecorder()
        broker = StubBroker(
            middleware=[
                CurrentMessage(),
                CircuitBreakers(breakers=registry),
                Retries(max_retries=0, permanent=(PermanentError,)),
                recorder,
            ]
        )
        broker.emit_after("process_boot")
        return broker, recorder

    yield make
    install(previous)


def test_a_message_whose_provider_breaker_is_open_is_delayed_without_spending_a_retry(
    make_broker: Callable[[BreakerRegistry], tuple[StubBroker, EnqueueRecorder]],
) -> None:
    # Given an actor that sends through sendgrid (no retries allowed) and sendgrid's breaker open
    registry = BreakerRegistry(fail_max=1, reset_timeout=60)
    broker, recorder = make_broker(registry)
    provider_calls: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="notifications", max_retries=0)
    def send_email(user_id: int) -> None:
        with guard("sendgrid"):
            provider_calls.append(user_id)

    fail(registry.get("sendgrid"))
    # When a message for it is processed
    send_email.send(7)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        assert recorder.event.wait(10)
    finally:
        worker.stop()
    # Then it was put back on the delay queue until the breaker half-opens, with its retries untouched
    [(delayed, delay)] = recorder.delayed
    assert delayed.queue_name == "notifications.DQ"
    assert 55_000 <= (delay or 0) <= 66_000
    assert delayed.options.get("retries", 0) == 0
    assert delayed.options["circuit_delays"] == 1
    # And it was neither sent nor dead-lettered
    assert provider_calls == []
    assert broker.dead_letters == []


def test_delayed_messages_go_out_once_the_breaker_half_opens(
    make_broker: Callable[[BreakerRegistry], tuple[StubBroker, EnqueueRecorder]],
) -> None:
    # Given sendgrid's breaker open with a short reset timeout, and two actors using it: one guards
    # its call, the other declares circuit_breaker="sendgrid" and is not even started while open
    registry = BreakerRegistry(fail_max=1, reset_timeout=0.3)
    broker, recorder = make_broker(registry)
    sent: list[str] = []
    started: list[str] = []

    @dramatiq.actor(broker=broker, queue_name="notifications", max_retries=0)
    def guarded(name: str) -> None:
        started.append(name)
        with guard("sendgrid"):
            sent.append(name)

    @dramatiq.actor(broker=broker, queue_name="notifications", max_retries=0, circuit_breaker="sendgrid")
    def declared(name: str) -> None:
        started.append(name)
        with guard("sendgrid"):
            sent.append(name)

    fail(registry.get("sendgrid"))
    guarded.send("a")
    declared.send("b")
    # When the worker runs until the queue and its delay queue are empty
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join("notifications", timeout=20_000)
    finally:
        worker.stop()
    # Then both were delayed at least once, then sent, and none was dead-lettered
    assert sorted(sent) == ["a", "b"]
    assert {m.actor_name for m, _ in recorder.delayed} >= {"guarded", "declared"}
    assert all(m.options.get("retries", 0) == 0 for m, _ in recorder.delayed)
    assert broker.dead_letters == []
    assert registry.get("sendgrid").state == "closed"
    # And the declared actor never started while the breaker was open
    assert started.count("b") == 1


def test_an_unknown_provider_in_an_actor_option_stops_the_declaration(
    make_broker: Callable[[BreakerRegistry], tuple[StubBroker, EnqueueRecorder]],
) -> None:
    broker, _ = make_broker(BreakerRegistry())
    with pytest.raises(UnknownProviderError, match="sendgird"):

        @dramatiq.actor(broker=broker, circuit_breaker="sendgird")
        def misspelt() -> None: ...


def test_called_directly_an_actor_lets_circuit_open_error_through(
    make_broker: Callable[[BreakerRegistry], tuple[StubBroker, EnqueueRecorder]],
) -> None:
    registry = BreakerRegistry(fail_max=1)
    broker, _ = make_broker(registry)

    @dramatiq.actor(broker=broker)
    def ping() -> None:
        with guard("fcm"):
            pass

    fail(registry.get("fcm"))
    with pytest.raises(CircuitOpenError):
        ping()
