"""The FCM adapter with the real ``firebase-admin`` SDK against the fake FCM v1 API: the message it
sends, how each failure is translated, and that a 503 fails at once instead of being retried for
seconds inside the SDK."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from actors.notifications.providers.fcm import DeadTokenError, FcmSender, Push
from contracts.errors import (
    ConfigurationError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
)
from middleware.breaker_storage import BreakerRegistry
from tests.fakes import fcm
from tests.fakes.fcm import FakeFcm
from tests.fakes.http import Reply


@pytest.fixture
def sender(fake_fcm: FakeFcm, fresh_breakers: BreakerRegistry) -> Iterator[FcmSender]:
    sender = FcmSender(project_id=fcm.PROJECT_ID, base_url=fake_fcm.url, timeout=1.0)
    yield sender
    sender.close()


def test_a_push_reaches_fcm_with_its_notification_and_data(sender: FcmSender, fake_fcm: FakeFcm) -> None:
    name = sender.send(Push(token="device-1", title="Report ready", body="Q1", data={"message_id": "m-1"}))
    assert name.startswith(f"projects/{fcm.PROJECT_ID}/messages/")
    assert fake_fcm.messages() == [
        {
            "token": "device-1",
            "notification": {"title": "Report ready", "body": "Q1"},
            "data": {"message_id": "m-1"},
        }
    ]


@pytest.mark.parametrize("reply", [fcm.unregistered(), fcm.invalid_token()])
def test_a_dead_token_is_reported_as_such(sender: FcmSender, fake_fcm: FakeFcm, reply: Reply) -> None:
    fake_fcm.queue(reply)
    with pytest.raises(DeadTokenError, match="FCM refused the device token"):
        sender.send(Push(token="device-1", title="t", body="b"))


def test_a_bad_payload_is_permanent_but_not_a_dead_token(sender: FcmSender, fake_fcm: FakeFcm) -> None:
    # INVALID_ARGUMENT about the message, not the token: the device must not be removed
    fake_fcm.queue(fcm.error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value'",
                             "INVALID_ARGUMENT"))  # fmt: skip
    with pytest.raises(ProviderRejectedError, match="invalid") as raised:
        sender.send(Push(token="device-1", title="t", body="b"))
    assert not isinstance(raised.value, DeadTokenError)


def test_a_token_named_by_a_field_violation_is_dead(sender: FcmSender, fake_fcm: FakeFcm) -> None:
    reply = fcm.error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT")
    reply.body["error"]["details"].append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                                           "fieldViolations": [{"field": "message.token"}]})  # fmt: skip
    fake_fcm.queue(reply)
    with pytest.raises(DeadTokenError):
        sender.send(Push(token="device-1", title="t", body="b"))


def test_an_outage_carries_retry_after_as_an_http_date(sender: FcmSender, fake_fcm: FakeFcm) -> None:
    reply = fcm.unavailable()
    reply.headers["Retry-After"] = email.utils.format_datetime(
        datetime.now(UTC) + timedelta(seconds=40), usegmt=True
    )
    fake_fcm.queue(reply)
    with pytest.raises(ProviderUnavailableError) as raised:
        sender.send(Push(token="device-1", title="t", body="b"))
    assert raised.value.retry_after is not None and 35 <= raised.value.retry_after <= 40


def test_a_quota_error_carries_retry_after(sender: FcmSender, fake_fcm: FakeFcm) -> None:
    fake_fcm.queue(fcm.quota_exceeded(retry_after=9))
    with pytest.raises(RateLimitedError) as raised:
        sender.send(Push(token="device-1", title="t", body="b"))
    assert raised.value.retry_after == 9.0


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_fails_at_once_without_the_sdks_retries(
    sender: FcmSender, fake_fcm: FakeFcm, status: int
) -> None:
    fake_fcm.queue(fcm.unavailable(status), fcm.unavailable(status), fcm.unavailable(status))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="FCM unavailable"):
        sender.send(Push(token="device-1", title="t", body="b"))
    assert len(fake_fcm.requests) == 1
    assert time.monotonic() - started < 1.0


def test_a_slow_fcm_is_a_transient_error_after_the_timeout(sender: FcmSender, fake_fcm: FakeFcm) -> None:
    fake_fcm.queue(Reply(200, {"name": "projects/x/messages/1"}, delay=2.0))
    with pytest.raises(ProviderUnavailableError):
        sender.send(Push(token="device-1", title="t", body="b"))


def test_googles_fcm_without_credentials_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="EDUJOBS_FCM_CREDENTIALS_FILE"):
        FcmSender(project_id="p")
