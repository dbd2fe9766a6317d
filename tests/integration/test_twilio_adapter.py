"""The Twilio adapter with the real ``twilio`` client against the fake Twilio API: what it sends, and
how each kind of failure is translated into an edujobs error."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest

from actors.notifications.providers.twilio import Sms, TwilioSender
from contracts.errors import (
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    RecipientError,
)
from middleware.breaker_storage import BreakerRegistry, CircuitOpenError
from store.once import OutcomeUnknownError
from tests.fakes import twilio
from tests.fakes.http import Reply
from tests.fakes.twilio import FakeTwilio

CALLBACK = "https://school.example.edu/hooks/twilio"


@pytest.fixture
def sender(fake_twilio: FakeTwilio, fresh_breakers: BreakerRegistry) -> TwilioSender:
    return TwilioSender(
        account_sid=twilio.ACCOUNT_SID,
        auth_token=twilio.AUTH_TOKEN,
        from_number=twilio.FROM_NUMBER,
        base_url=fake_twilio.url,
        timeout=1.0,
        status_callback=CALLBACK,
    )


def test_an_sms_reaches_twilio_with_its_fields_and_returns_the_sid(
    sender: TwilioSender, fake_twilio: FakeTwilio
) -> None:
    # When an SMS is sent
    sid = sender.send(Sms(to="+15551230001", body="Your report is ready"))
    # Then Twilio got one authenticated form post with the number, sender, body and callback
    [fields] = fake_twilio.messages()
    assert fields == {
        "To": "+15551230001",
        "From": twilio.FROM_NUMBER,
        "Body": "Your report is ready",
        "StatusCallback": CALLBACK,
    }
    assert sid.startswith("SM") and len(sid) == 34


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (twilio.invalid_number("+1555"), RecipientError, "is not a valid phone number. (Twilio code 21211)"),
        (Reply(400, {"code": 21602, "message": "Message body is required.", "status": 400}),
         ProviderRejectedError, "Twilio refused the SMS (400)"),
        (twilio.server_error(503), ProviderUnavailableError, "Twilio error 503"),
        (twilio.server_error(500), ProviderUnavailableError, "Twilio error 500"),
        (Reply(400, {"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To' number",
                     "status": 400, "code": 21211, "detail": "+1555 is not a number"}),
         RecipientError, "+1555 is not a number"),
    ],
)  # fmt: skip
def test_failures_are_translated(
    sender: TwilioSender, fake_twilio: FakeTwilio, reply: Reply, error: type[Exception], text: str
) -> None:
    fake_twilio.queue(reply)
    with pytest.raises(error) as raised:
        sender.send(Sms(to="+15551230001", body="hello"))
    assert text in str(raised.value)


def test_a_rate_limit_carries_twilios_retry_after(sender: TwilioSender, fake_twilio: FakeTwilio) -> None:
    fake_twilio.queue(twilio.rate_limited(retry_after=7))
    with pytest.raises(RateLimitedError) as raised:
        sender.send(Sms(to="+15551230001", body="hello"))
    assert raised.value.retry_after == 7.0


def test_a_slow_twilio_is_a_transient_error_after_the_timeout(
    sender: TwilioSender, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.queue(Reply(201, {"sid": "SM" + "1" * 32}, delay=2.0))
    # The request went out: Twilio may have queued the SMS, so the ledger keeps its claim
    with pytest.raises(OutcomeUnknownError, match="did not answer in time"):
        sender.send(Sms(to="+15551230001", body="hello"))


def test_a_503_carries_retry_after_as_an_http_date(sender: TwilioSender, fake_twilio: FakeTwilio) -> None:
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    reply = twilio.server_error(503)
    reply.headers["Retry-After"] = later
    fake_twilio.queue(reply)
    with pytest.raises(ProviderUnavailableError) as raised:
        sender.send(Sms(to="+15551230001", body="hello"))
    assert raised.value.retry_after is not None and 85 <= raised.value.retry_after <= 90


def test_repeated_outages_open_the_twilio_breaker(
    sender: TwilioSender, fake_twilio: FakeTwilio, fresh_breakers: BreakerRegistry
) -> None:
    # Given Twilio failing as many times as the breaker tolerates
    fake_twilio.queue(*[twilio.server_error(503) for _ in range(fresh_breakers.fail_max)])
    for _ in range(fresh_breakers.fail_max):
        with pytest.raises(ProviderUnavailableError):
            sender.send(Sms(to="+15551230001", body="hello"))
    # When one more SMS is sent, Then it is refused without a request reaching Twilio
    requests = len(fake_twilio.requests)
    with pytest.raises(CircuitOpenError):
        sender.send(Sms(to="+15551230001", body="hello"))
    assert len(fake_twilio.requests) == requests
    # And an invalid number (Twilio answered) would not have counted as an outage
    assert fresh_breakers.is_open("twilio")
