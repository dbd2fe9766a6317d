"""notify_user and the channel services against the fake SendGrid, Twilio and FCM servers, on a
SQLite ledger: quiet hours hold every SMS and push (fallbacks and direct sends alike), a push once
delivered is not repeated after the user's tokens change, dead tokens are removed even when a later
device fails, and a broken template is raised instead of hidden behind a fallback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.notifications import routing, service
from actors.notifications.errors import ChannelNotConfiguredError
from actors.notifications.quiet import QuietHours
from brokers.settings import Settings
from contracts.errors import ProviderUnavailableError, TemplateError
from middleware.breaker_storage import BreakerRegistry
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.models import Delivery, User
from tests.fakes import fcm, twilio
from tests.fakes.fcm import FakeFcm
from tests.fakes.http import Reply
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio

#: 23:00 UTC, inside the default quiet hours (21:00-07:00) of a user in UTC.
NIGHT = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
MORNING = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ALERT = {"title": "School closed", "body": "Snow today."}


@pytest.fixture
def notifier(
    tmp_path: Path,
    fake_sendgrid: FakeSendGrid,
    fake_twilio: FakeTwilio,
    fake_fcm: FakeFcm,
    fresh_breakers: BreakerRegistry,
) -> Iterator[service.Notifier]:
    url = f"sqlite:///{tmp_path}/notify.db"
    upgrade(url)
    engine = make_engine(url)
    settings = Settings(
        sendgrid_api_key="SG.test-key", sendgrid_host=fake_sendgrid.url, sendgrid_timeout=5,
        email_from="school@example.edu",
        twilio_account_sid=twilio.ACCOUNT_SID, twilio_auth_token=twilio.AUTH_TOKEN,
        twilio_from_number=twilio.FROM_NUMBER, twilio_base_url=fake_twilio.url,
        fcm_project_id=fcm.PROJECT_ID, fcm_base_url=fake_fcm.url, fcm_timeout=2,
    )  # fmt: skip
    with Session(engine) as session:
        session.add(User(id=1, name="Ada", role="student", email="ada@example.edu", phone="+15551230001",
                         channel_order=["email", "sms"]))  # fmt: skip
        session.add(User(id=2, name="Bo", role="student", phone="+15551230002", push_tokens=["phone-a"],
                         channel_order=["push", "sms"]))  # fmt: skip
        session.commit()
    yield service.Notifier(engine=engine, ledger=Ledger(engine), settings=settings)
    engine.dispose()


def notify(notifier: service.Notifier, user_id: int, *, now: datetime, key: str = "alert:1",
           critical: bool = False) -> routing.Delivered | routing.Deferred:  # fmt: skip
    return routing.notify_user(notifier, user_id=user_id, template="emergency_alert", context=ALERT,
                               idempotency_key=key, message_id="m-1", critical=critical, now=now)  # fmt: skip


def rows(notifier: service.Notifier) -> dict[str, tuple[str, str, str | None]]:
    with Session(notifier.engine) as session:
        return {d.idempotency_key: (d.channel, d.status, d.error) for d in session.scalars(select(Delivery))}


def test_a_fallback_to_sms_at_night_waits_for_the_morning(
    notifier: service.Notifier, fake_sendgrid: FakeSendGrid, fake_twilio: FakeTwilio
) -> None:
    # Given a user who ranks email before SMS, and SendGrid refusing the email for good
    fake_sendgrid.queue(Reply(400, {"errors": [{"message": "Does not contain a valid address."}]}))
    # When a non-critical notification is sent during their quiet hours
    outcome = notify(notifier, 1, now=NIGHT)
    # Then no SMS goes out: the notification is deferred to the end of the quiet period
    assert outcome == routing.Deferred(MORNING)
    assert len(fake_sendgrid.requests) == 1 and fake_twilio.requests == []
    assert rows(notifier)["alert:1:email"][:2] == ("email", "failed")
    # And in the morning, the retried notification falls back to SMS
    fake_sendgrid.queue(Reply(400, {"errors": [{"message": "Does not contain a valid address."}]}))
    later = notify(notifier, 1, now=MORNING)
    assert isinstance(later, routing.Delivered) and later.channel == "sms"
    assert [m["To"] for m in fake_twilio.messages()] == ["+15551230001"]


def test_a_critical_fallback_to_sms_goes_out_at_night(
    notifier: service.Notifier, fake_sendgrid: FakeSendGrid, fake_twilio: FakeTwilio
) -> None:
    fake_sendgrid.queue(Reply(400, {"errors": [{"message": "Does not contain a valid address."}]}))
    outcome = notify(notifier, 1, now=NIGHT, critical=True)
    assert isinstance(outcome, routing.Delivered) and outcome.channel == "sms"
    assert fake_twilio.messages()[0]["Body"] == "ALERT: School closed. Snow today."


def test_direct_sms_and_push_wait_for_the_end_of_quiet_hours_unless_critical(
    notifier: service.Notifier, fake_twilio: FakeTwilio, fake_fcm: FakeFcm
) -> None:
    common = {"template": "emergency_alert", "context": ALERT, "message_id": "m-2", "now": NIGHT}
    with pytest.raises(QuietHours) as sms_waits:
        service.send_sms(notifier, user_id=1, idempotency_key="sms:1", **common)  # type: ignore[arg-type]
    with pytest.raises(QuietHours) as push_waits:
        service.send_push(notifier, user_id=2, idempotency_key="push:1", **common)  # type: ignore[arg-type]
    assert sms_waits.value.until == push_waits.value.until == MORNING
    assert fake_twilio.requests == [] and fake_fcm.requests == []
    assert rows(notifier) == {}  # nothing claimed: the morning's attempt starts clean
    sent = service.send_sms(notifier, user_id=1, idempotency_key="sms:1", critical=True, **common)  # type: ignore[arg-type]
    assert sent.status == "sent" and len(fake_twilio.requests) == 1


def test_a_delivered_push_is_not_repeated_after_the_users_token_changes(
    notifier: service.Notifier, fake_fcm: FakeFcm, fake_twilio: FakeTwilio
) -> None:
    # Given a push notification delivered to the user's phone
    first = notify(notifier, 2, now=NOON)
    assert isinstance(first, routing.Delivered) and first.channel == "push"
    # When the app rotates its token and the same notification is redelivered
    with Session(notifier.engine) as session:
        session.get(User, 2).push_tokens = ["phone-a-rotated"]  # type: ignore[union-attr]
        session.commit()
    again = notify(notifier, 2, now=NOON)
    # Then nothing more is sent, by push or SMS
    assert isinstance(again, routing.Delivered) and again.result.status == "duplicate"
    assert [m["token"] for m in fake_fcm.messages()] == ["phone-a"] and fake_twilio.requests == []
    assert rows(notifier)["alert:1:push"][:2] == ("push", "sent")


def test_dead_tokens_are_removed_even_when_a_later_device_fails(
    notifier: service.Notifier, fake_fcm: FakeFcm
) -> None:
    with Session(notifier.engine) as session:
        session.get(User, 2).push_tokens = ["gone", "flaky"]  # type: ignore[union-attr]
        session.commit()
    fake_fcm.queue(fcm.unregistered(), fcm.unavailable())
    with pytest.raises(ProviderUnavailableError):
        service.send_push(notifier, user_id=2, template="welcome", context={}, idempotency_key="w:2",
                          message_id="m-3", now=NOON)  # fmt: skip
    with Session(notifier.engine) as session:
        assert session.get(User, 2).push_tokens == ["flaky"]  # type: ignore[union-attr]


def test_a_bad_payload_keeps_the_users_tokens_and_falls_back(
    notifier: service.Notifier, fake_fcm: FakeFcm, fake_twilio: FakeTwilio
) -> None:
    fake_fcm.queue(fcm.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "INVALID_ARGUMENT"))
    outcome = notify(notifier, 2, now=NOON)
    assert isinstance(outcome, routing.Delivered) and outcome.channel == "sms"
    with Session(notifier.engine) as session:
        assert session.get(User, 2).push_tokens == ["phone-a"]  # type: ignore[union-attr]
    channel, status, error = rows(notifier)["alert:1:push"]
    assert (channel, status) == ("push", "skipped") and "Invalid JSON payload" in (error or "")


def test_a_broken_template_is_raised_not_hidden_by_a_fallback(
    notifier: service.Notifier, fake_sendgrid: FakeSendGrid, fake_twilio: FakeTwilio
) -> None:
    with pytest.raises(TemplateError, match=r"emergency_alert.*'body' is undefined"):
        routing.notify_user(notifier, user_id=1, template="emergency_alert", context={"title": "x"},
                            idempotency_key="broken", message_id="m-4", now=NOON)  # fmt: skip
    assert fake_sendgrid.requests == [] and fake_twilio.requests == []


def test_an_sms_too_long_for_two_segments_falls_back_to_email(
    notifier: service.Notifier, fake_sendgrid: FakeSendGrid, fake_twilio: FakeTwilio
) -> None:
    long_alert = {"title": "Closure", "body": "Snow. " * 80}
    outcome = routing.notify_user(notifier, user_id=1, template="emergency_alert", context=long_alert,
                                  idempotency_key="long", message_id="m-5", channels=["sms", "email"],
                                  now=NOON)  # fmt: skip
    assert isinstance(outcome, routing.Delivered) and outcome.channel == "email"
    assert fake_twilio.requests == [] and len(fake_sendgrid.requests) == 1
    assert rows(notifier)["long:sms"][:2] == ("sms", "skipped")


def test_an_unconfigured_channel_is_skipped_with_its_reason(
    notifier: service.Notifier, fake_twilio: FakeTwilio
) -> None:
    # Given SendGrid has no API key
    unconfigured = service.Notifier(
        engine=notifier.engine,
        ledger=notifier.ledger,
        settings=notifier.settings.model_copy(update={"sendgrid_api_key": Settings().sendgrid_api_key}),
    )
    # Then a direct email is refused as not configured (dead-lettered, nothing claimed)
    with pytest.raises(ChannelNotConfiguredError, match="EDUJOBS_SENDGRID_API_KEY"):
        service.send_email(unconfigured, user_id=1, template="welcome", context={}, idempotency_key="w",
                           message_id="m-6")  # fmt: skip
    assert "w" not in rows(notifier)
    # And a notification goes by SMS, the ledger saying why email was skipped
    outcome = notify(unconfigured, 1, now=NOON)
    assert isinstance(outcome, routing.Delivered) and outcome.channel == "sms"
    channel, status, error = rows(notifier)["alert:1:email"]
    assert (channel, status) == ("email", "skipped") and "EDUJOBS_SENDGRID_API_KEY" in (error or "")


def test_quiet_hours_follow_the_users_own_period(notifier: service.Notifier, fake_twilio: FakeTwilio) -> None:
    with Session(notifier.engine) as session:
        user = session.get(User, 1)
        assert user is not None
        user.channel_order, user.quiet_hours_start, user.quiet_hours_end = ["sms"], time(0, 0), time(0, 0)
        session.commit()
    outcome = notify(notifier, 1, now=NIGHT)  # no quiet hours for this user
    assert isinstance(outcome, routing.Delivered) and outcome.channel == "sms"
