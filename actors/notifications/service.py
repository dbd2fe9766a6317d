"""The logic of notifications, free of dramatiq: find the recipient, render, send once.

Every delivery goes through the ledger (``store.ledger``, ``store.once``): a redelivered, retried or
requeued message finds its key already ``sent`` on its channel and sends nothing; one whose earlier
attempt may or may not have reached the provider is an unknown outcome, held (``unknown``) unless
the caller's ``resend_unknown`` (critical and high priority) says to send again. SMS and push obey
the user's quiet hours here (``quiet.check_quiet_hours``), whichever actor sends them; email never
waits.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, Table, bindparam, select
from sqlalchemy.orm import Session

from actors.notifications.attachments import load_attachments
from actors.notifications.errors import ChannelNotConfiguredError, OptedOutError
from actors.notifications.providers.fcm import DeadTokenError, FcmSender, Push
from actors.notifications.providers.sendgrid import Email, SendGridMailer
from actors.notifications.providers.twilio import Sms, TwilioSender
from actors.notifications.quiet import check_quiet_hours
from actors.notifications.templates import render_email, render_push, render_sms
from brokers.settings import Settings, get_settings
from contracts.errors import ConfigurationError, RecipientError
from store.db import autocommit, get_engine
from store.ledger import RETAKEABLE, SENT, UNKNOWN, Ledger
from store.models import User
from store.once import Outcome, give_back, perform_claimed, perform_once

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryResult:
    status: str  # "sent", "duplicate" or "unknown" (may have gone out: held, not repeated)
    idempotency_key: str
    provider_message_id: str | None

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "provider_message_id": self.provider_message_id}


@dataclass(frozen=True)
class Notifier:
    """What the notification actors need, built once per worker process."""

    engine: Engine
    ledger: Ledger
    settings: Settings

    @functools.cached_property
    def mailer(self) -> SendGridMailer:
        """The SendGrid mailer, built on first use. Without an API key every email would come back
        401 one by one into the dead-letter queue: refuse it as not configured instead."""
        settings = self.settings
        api_key = settings.sendgrid_api_key.get_secret_value().strip()
        if not api_key:
            raise ChannelNotConfiguredError("email is not configured: set EDUJOBS_SENDGRID_API_KEY")
        return SendGridMailer(
            api_key=api_key,
            host=str(settings.sendgrid_host),
            timeout=settings.sendgrid_timeout,
            from_email=settings.email_from,
            from_name=settings.email_from_name,
        )

    @functools.cached_property
    def sms(self) -> TwilioSender:
        """The Twilio sender, built on first use (a worker that never sends SMS needs no Twilio)."""
        settings = self.settings
        token = settings.twilio_auth_token.get_secret_value()
        if not (settings.twilio_account_sid and token and settings.twilio_from_number):
            raise ChannelNotConfiguredError(
                "SMS is not configured: set EDUJOBS_TWILIO_ACCOUNT_SID, EDUJOBS_TWILIO_AUTH_TOKEN and "
                "EDUJOBS_TWILIO_FROM_NUMBER"
            )
        callback = settings.twilio_status_callback_url
        return TwilioSender(
            account_sid=settings.twilio_account_sid,
            auth_token=token,
            from_number=settings.twilio_from_number,
            base_url=str(settings.twilio_base_url),
            timeout=settings.twilio_timeout,
            status_callback=str(callback) if callback else None,
        )

    @functools.cached_property
    def push(self) -> FcmSender:
        """The FCM sender, built on first use."""
        settings = self.settings
        if not settings.fcm_project_id:
            raise ChannelNotConfiguredError("push is not configured: set EDUJOBS_FCM_PROJECT_ID")
        try:
            return FcmSender(
                project_id=settings.fcm_project_id,
                base_url=str(settings.fcm_base_url),
                timeout=settings.fcm_timeout,
                credentials_file=settings.fcm_credentials_file,
            )
        except ConfigurationError as e:
            raise ChannelNotConfiguredError(str(e)) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        engine = get_engine()
        ledger = Ledger(engine, owner_timeout=settings.ledger_owner_timeout_seconds)
        return cls(engine=engine, ledger=ledger, settings=settings)


class ChannelSender(Protocol):
    """``send_email``, ``send_sms`` and ``send_push``: one templated message to one user, at most
    once per key. ``critical`` lets SMS and push through quiet hours; ``resend_unknown`` sends
    again when an earlier attempt's outcome is unknown (``store.once``); ``now`` is for tests."""

    def __call__(
        self,
        notifier: Notifier,
        *,
        user_id: int,
        template: str,
        context: dict[str, Any],
        idempotency_key: str,
        message_id: str,
        critical: bool = False,
        resend_unknown: bool = False,
        now: datetime | None = None,
    ) -> DeliveryResult: ...


@functools.cache
def default_notifier() -> Notifier:
    return Notifier.from_settings(get_settings())


_users: Table = User.__table__  # type: ignore[assignment]
#: ``load_user``'s query, built once (``Session.get`` builds one per call: twice the CPU).
_USER_BY_ID = select(_users).where(_users.c.id == bindparam("user_id"))


def load_user(engine: Engine, user_id: int) -> User:
    """The user, read for this notification (a detached copy: nothing here writes it back)."""
    # One read: in autocommit it is one round trip, not a BEGIN, the SELECT and a ROLLBACK. The
    # row is read by SQLAlchemy Core and the User built from it, without a Session and the ORM's
    # loading, which cost the busy worker a third of what reading the user costs.
    with autocommit(engine).connect() as connection:
        row = connection.execute(_USER_BY_ID, {"user_id": user_id}).first()
    return _user_from(row._mapping if row is not None else None, user_id)


def _user_from(row: Mapping[Any, Any] | None, user_id: int) -> User:
    if row is None:
        raise RecipientError(f"user {user_id} does not exist")
    return User(**row)


_ADDRESS_NAMES = {"email": "email address", "phone": "phone number"}


def reachable_user(engine: Engine, user_id: int, channel: str, address: str) -> User:
    """The user, if ``channel`` can reach them: they have an ``address`` (email, phone) and have not
    opted out; else a permanent error saying which."""
    return _reachable(load_user(engine, user_id), channel, address)


def _reachable(user: User, channel: str, address: str) -> User:
    if not getattr(user, address):
        raise RecipientError(f"user {user.id} has no {_ADDRESS_NAMES.get(address, address)}")
    if channel in (user.opted_out or []):
        raise OptedOutError(f"user {user.id} opted out of {channel}")
    return user


def deliver_once(
    notifier: Notifier,
    *,
    channel: str,
    user_id: int | None,
    idempotency_key: str,
    message_id: str,
    actor_name: str,
    send: Callable[[], str | None],
    resend_unknown: bool = False,
    prepare: Callable[[], object] | None = None,
) -> DeliveryResult:
    """Call ``send`` (which returns the provider's message id) unless the ledger already has
    ``idempotency_key`` done on ``channel`` (``store.once.perform_once``). ``send`` is a provider
    adapter's call: it marks the moment its request leaves (``store.once.request_leaving``)."""
    outcome = perform_once(
        notifier.ledger,
        idempotency_key,
        channel=channel,
        actor_name=actor_name,
        message_id=message_id,
        user_id=user_id,
        action=send,
        resend_unknown=resend_unknown,
        prepare=prepare,
        marks_leaving=True,
    )
    return _delivery_result(idempotency_key, outcome)


_RESULTS = {"done": "sent", "duplicate": "duplicate", "unknown": "unknown"}


def _delivery_result(idempotency_key: str, outcome: Outcome) -> DeliveryResult:
    return DeliveryResult(_RESULTS[outcome.status], idempotency_key, outcome.provider_message_id)


def already_sent(notifier: Notifier, idempotency_key: str, channel: str) -> DeliveryResult | None:
    """The earlier delivery of ``idempotency_key`` on ``channel``, if it was sent (or may have
    been: ``unknown``): checked before quiet hours, so a redelivery of something already sent is
    answered at once instead of waiting for morning."""
    earlier = notifier.ledger.get(idempotency_key, channel)
    if earlier is None or earlier.status not in (SENT, UNKNOWN):
        return None
    status = "duplicate" if earlier.status == SENT else "unknown"
    return DeliveryResult(status, idempotency_key, earlier.provider_message_id)


def send_email(
    notifier: Notifier,
    *,
    user_id: int,
    template: str,
    context: dict[str, Any],
    idempotency_key: str,
    message_id: str,
    actor_name: str = "notifications.send_email",
    attachments: Sequence[Mapping[str, str]] = (),
    critical: bool = False,
    resend_unknown: bool = False,
    now: datetime | None = None,
) -> DeliveryResult:
    """Render ``template`` for the user and send it through SendGrid at most once per key (an email
    does not wait for quiet hours: ``critical`` and ``now`` change nothing here).

    The claim and the user's row are one statement on PostgreSQL (``Ledger.claim_and_read``): an
    email costs two round trips to the database, not three. A key already sent, or being sent,
    is answered from the ledger without looking at the user; for a new key, everything that can
    fail before the send (the user, the configuration, the template, the attachments) is checked
    after the claim, and a failure gives the claim back (``Ledger.unclaim``): a new key leaves no
    row, as if never claimed; a key taken over from an earlier failed attempt is released as
    ``failed`` again, with this failure's reason."""
    ledger = notifier.ledger
    claim, row = ledger.claim_and_read(
        idempotency_key, channel="email", actor_name=actor_name, message_id=message_id, user_id=user_id,
        read=_USER_BY_ID, parameters={"user_id": user_id}, resend_unknown=resend_unknown,
    )  # fmt: skip
    if claim.acquired:
        try:
            user = _reachable(_user_from(row, user_id), "email", "email")
            mailer = notifier.mailer  # not configured: the claim is given back below
            rendered = render_email(template, {"name": user.name, "locale": user.locale, **context})
            email = Email(
                to=user.email or "",
                to_name=user.name,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                categories=(template,),
                custom_args={"message_id": message_id, "idempotency_key": idempotency_key},
                attachments=load_attachments(attachments),
            )
        except BaseException as e:
            give_back(ledger, claim, e)
            raise
    outcome = perform_claimed(
        ledger, claim, action=lambda: mailer.send(email), resend_unknown=resend_unknown, marks_leaving=True
    )
    return _delivery_result(idempotency_key, outcome)


def send_sms(
    notifier: Notifier,
    *,
    user_id: int,
    template: str,
    context: dict[str, Any],
    idempotency_key: str,
    message_id: str,
    actor_name: str = "notifications.send_sms",
    critical: bool = False,
    resend_unknown: bool = False,
    now: datetime | None = None,
) -> DeliveryResult:
    """Render the SMS variant of ``template`` for the user and send it through Twilio at most once
    per key; during the user's quiet hours, unless ``critical``, raise ``QuietHours``."""
    user = reachable_user(notifier.engine, user_id, "sms", "phone")
    if (earlier := already_sent(notifier, idempotency_key, "sms")) is not None:
        return earlier
    check_quiet_hours(user, "sms", critical=critical, now=now)
    sms = Sms(
        to=user.phone or "", body=render_sms(template, {"name": user.name, "locale": user.locale, **context})
    )
    sender = notifier.sms  # before the ledger claim: a missing configuration claims nothing
    return deliver_once(
        notifier,
        channel="sms",
        user_id=user_id,
        idempotency_key=idempotency_key,
        message_id=message_id,
        actor_name=actor_name,
        send=lambda: sender.send(sms),
        resend_unknown=resend_unknown,
    )


def send_push(
    notifier: Notifier,
    *,
    user_id: int,
    template: str,
    context: dict[str, Any],
    idempotency_key: str,
    message_id: str,
    actor_name: str = "notifications.send_push",
    critical: bool = False,
    resend_unknown: bool = False,
    now: datetime | None = None,
) -> DeliveryResult:
    """Send the push variant of ``template`` to each of the user's devices, once per device and key;
    during the user's quiet hours, unless ``critical``, raise ``QuietHours``.

    Each device has its own ledger row (``<key>:push:<token hash>``, channel ``push_device``): a
    retry after a failure on one device does not notify the devices already reached. Once every
    device has been tried and one was reached, a ``push`` row under ``<key>`` itself says the
    notification went out, so a redelivery after the user's tokens changed (a new token has no
    device row yet) sends nothing. Tokens FCM calls unregistered or invalid are removed from the
    user, even when a later device fails; if no device is left, the push is a ``RecipientError``.
    """
    if (earlier := already_sent(notifier, idempotency_key, "push")) is not None:
        return earlier
    user = reachable_user(notifier.engine, user_id, "push", "push_tokens")
    check_quiet_hours(user, "push", critical=critical, now=now)
    title, body = render_push(template, {"name": user.name, "locale": user.locale, **context})
    sender = notifier.push  # before any ledger claim: a missing configuration claims nothing
    data = {"message_id": message_id, "template": template}
    delivered: list[DeliveryResult] = []
    dead: list[str] = []
    try:
        for token in list(user.push_tokens):
            push = Push(token=token, title=title, body=body, data=data)
            try:
                delivered.append(
                    deliver_once(
                        notifier,
                        channel="push_device",
                        user_id=user_id,
                        idempotency_key=f"{idempotency_key}:push:{_token_hash(token)}",
                        message_id=message_id,
                        actor_name=actor_name,
                        send=functools.partial(sender.send, push),
                        resend_unknown=resend_unknown,
                    )
                )
            except DeadTokenError:
                dead.append(token)
    finally:
        # Also when a later device raised (a 503, a time limit): the dead tokens found so far are
        # known for good, and the retry should not try them again.
        if dead:
            remove_push_tokens(notifier.engine, user_id, dead)
    if not delivered:
        raise RecipientError(f"user {user_id} has no registered device left ({len(dead)} token(s) removed)")
    provider_id = delivered[0].provider_message_id
    statuses = {d.status for d in delivered}
    # Unknown only when no device is known to have it: a redelivery then sends to no device again.
    status = next(s for s in ("sent", "duplicate", "unknown") if s in statuses)
    notifier.ledger.record(idempotency_key, status=UNKNOWN if status == "unknown" else SENT, channel="push",
                           actor_name=actor_name, message_id=message_id, user_id=user_id,
                           provider_message_id=provider_id, replaces=RETAKEABLE)  # fmt: skip
    return DeliveryResult(status, idempotency_key, provider_id)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def remove_push_tokens(engine: Engine, user_id: int, tokens: list[str]) -> None:
    """Remove dead device tokens from a user (row-locked, so concurrent removals all stick)."""
    with Session(engine) as session, session.begin():
        user = session.get(User, user_id, with_for_update=True)
        if user is not None:
            user.push_tokens = [t for t in user.push_tokens if t not in tokens]
    logger.info("Removed %d dead push token(s) of user %s.", len(tokens), user_id)
