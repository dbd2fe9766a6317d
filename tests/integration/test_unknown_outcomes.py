"""Finding 11: a provider call that failed after its request may have reached the provider is an
*unknown outcome*, for SendGrid, Twilio and FCM alike; one that failed before it left is an outage.

Each adapter runs its real SDK against a fake server that receives (and records) the request, then
hangs up, resets the connection, answers after the client's timeout, or lets a gateway answer 502
or 504. The fake has the message: the adapter must say ``OutcomeUnknownError``, never a plain
outage that the retry would answer by sending a second copy.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.notifications.providers.fcm import FcmSender, Push
from actors.notifications.providers.sendgrid import Email, SendGridMailer
from actors.notifications.providers.twilio import Sms, TwilioSender
from contracts.errors import ProviderUnavailableError
from middleware.breaker_storage import BreakerRegistry
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.once import OutcomeUnknownError, perform_once
from tests.fakes import fcm, twilio
from tests.fakes.fcm import FakeFcm
from tests.fakes.http import FakeServer, Reply, gateway_error, hang_up, reset
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.integration

TIMEOUT = 0.5

FAULTS: dict[str, Callable[[], Reply]] = {
    "hang_up": hang_up,
    "reset": reset,
    "read_timeout": lambda: Reply(202, None, delay=TIMEOUT * 4),
    "gateway_502": lambda: gateway_error(502),
    "gateway_504": lambda: gateway_error(504),
}

Send = Callable[[], object]


@pytest.fixture(params=["sendgrid", "twilio", "fcm"])
def provider(
    request: pytest.FixtureRequest, fresh_breakers: BreakerRegistry
) -> Iterator[tuple[FakeServer, Send]]:
    """A fake provider and a call of its adapter that sends one message to it."""
    if request.param == "sendgrid":
        sendgrid = FakeSendGrid().start()
        mailer = SendGridMailer(api_key="SG.key", host=sendgrid.url, timeout=TIMEOUT, from_email="a@b.edu")
        email = Email(to="ada@example.edu", subject="Hi", html="<p>Hi</p>", text="Hi")
        yield sendgrid, lambda: mailer.send(email)
        sendgrid.stop()
    elif request.param == "twilio":
        fake_twilio = FakeTwilio().start()
        sms = TwilioSender(
            account_sid=twilio.ACCOUNT_SID, auth_token=twilio.AUTH_TOKEN, from_number=twilio.FROM_NUMBER,
            base_url=fake_twilio.url, timeout=TIMEOUT,
        )  # fmt: skip
        yield fake_twilio, lambda: sms.send(Sms(to="+15551230001", body="Hi"))
        fake_twilio.stop()
    else:
        fake_fcm = FakeFcm().start()
        push = FcmSender(project_id=fcm.PROJECT_ID, base_url=fake_fcm.url, timeout=TIMEOUT)
        yield fake_fcm, lambda: push.send(Push(token="device-1", title="t", body="b"))
        push.close()
        fake_fcm.stop()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failure_after_the_request_arrived_is_an_unknown_outcome(
    provider: tuple[FakeServer, Send], fault: str
) -> None:
    server, send = provider
    # Given a provider that receives the request, then fails to answer it
    server.queue(FAULTS[fault]())
    # When the adapter sends one message
    with pytest.raises(OutcomeUnknownError):
        send()
    # Then the provider has it, once: the SDK did not send it again on its own either
    assert len(server.wait_for(1)) == 1


def test_a_provider_that_cannot_be_reached_is_an_outage_not_an_unknown_outcome(
    provider: tuple[FakeServer, Send],
) -> None:
    server, send = provider
    # Given a provider whose port refuses connections (the server stopped; nothing listens)
    host, port = server.url.removeprefix("http://").split(":")
    server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0
    # When the adapter sends: the request never left, so the retry may send it
    with pytest.raises(ProviderUnavailableError) as raised:
        send()
    assert not isinstance(raised.value, OutcomeUnknownError)


@pytest.mark.parametrize("status", [500, 503])
def test_a_provider_answering_500_or_503_failed_and_is_retried(
    provider: tuple[FakeServer, Send], status: int
) -> None:
    server, send = provider
    # Given the provider itself answers that it failed (not a gateway)
    server.queue(
        fcm.unavailable(status) if isinstance(server, FakeFcm)
        else twilio.server_error(status) if isinstance(server, FakeTwilio)
        else Reply(status, {"errors": [{"message": "down"}]})
    )  # fmt: skip
    with pytest.raises(ProviderUnavailableError) as raised:
        send()
    assert not isinstance(raised.value, OutcomeUnknownError)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    ledger = Ledger(make_engine(url))
    yield ledger
    ledger.close()


def perform(ledger: Ledger, send: Send) -> str:
    return perform_once(ledger, "k", channel="c", actor_name="a", message_id="m", action=lambda: str(send()),
                        marks_leaving=True).status  # fmt: skip


def test_a_request_whose_connection_never_came_up_is_not_marked_as_leaving(
    provider: tuple[FakeServer, Send], ledger: Ledger
) -> None:
    server, send = provider
    # Given a provider nothing listens for
    server.stop()
    # When the adapter's call fails to connect
    with pytest.raises(ProviderUnavailableError):
        perform(ledger, send)
    # Then the claim was never marked as leaving: a worker killed while connecting leaves a claim
    # that provably never left (sent again at once), not an unknown outcome
    row = ledger.get("k", "c")
    assert row is not None and row.status == "failed" and row.sending_at is None


def test_a_request_that_reached_the_provider_was_marked_as_leaving(
    provider: tuple[FakeServer, Send], ledger: Ledger
) -> None:
    server, send = provider
    server.queue(hang_up())
    assert perform(ledger, send) == "unknown"
    row = ledger.get("k", "c")
    assert row is not None and row.sending_at is not None
