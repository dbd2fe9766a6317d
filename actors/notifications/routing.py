"""Routing a notification to a user: which channels, in which order, when, and falling back.

``notify_user`` (no dramatiq here; the actor adapts it) takes the user's channel order (default
push → SMS → email) or the sender's, drops the channels the user opted out of or cannot be reached
on, and tries them in turn:

- **quiet hours** (``quiet``): no SMS or push between the user's ``quiet_hours_start`` and
  ``quiet_hours_end`` in their own time zone, unless the notification is critical. If the user's
  first channel is SMS or push, the whole notification waits for the end of the quiet period
  (``Deferred``: the actor re-enqueues it with that delay, durably parked in RabbitMQ) rather than
  falling through to a channel the user ranks lower. A fallback to SMS or push during quiet hours
  (email failed first) is not sent either: if no later channel delivers, the notification is
  deferred to the end of the quiet period;
- **fallback**: when a channel's circuit breaker is open or the channel fails permanently for this
  user (no device left, invalid number, opt-out, not configured...), the next channel is tried.
  Each channel attempt has its own ledger key (``<key>:<channel>``); a channel left out or passed
  over gets a ``skipped`` row there with the reason (a failed send keeps its ``failed`` row), so an
  operator sees why an SMS went out instead of a push;
- **broken templates are not hidden**: a missing template or variable (``TemplateError``) is a bug
  to fix, not a reason to try another channel; it is raised, and the message is dead-lettered
  naming the template. Only a text too long for a channel (an SMS over two segments) falls back;
- **once**: if any channel of this notification was already delivered (a redelivered or retried
  message), or may have been (an unknown outcome, held: ``store.once``), nothing is sent again on
  any channel: a push that may have arrived is not followed by an SMS.

If no channel delivered: when some were skipped only because their breaker is open, the
``CircuitOpenError`` is raised (the CircuitBreakers middleware delays the message until the breaker
half-opens, spending no retry); otherwise a ``PermanentError`` names each channel's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.notifications import service
from actors.notifications.quiet import QuietHours, check_quiet_hours, quiet_until
from actors.notifications.service import ChannelSender, DeliveryResult, Notifier
from actors.notifications.templates import TemplateTooLongError
from contracts.errors import PermanentError, RecipientError, TemplateError
from middleware.breaker_storage import CircuitOpenError
from store.ledger import SENT, SKIPPED, UNKNOWN
from store.models import User

__all__ = ["Deferred", "Delivered", "NoChannelError", "notify_user", "quiet_until", "reachable_channels"]

logger = logging.getLogger(__name__)

CHANNELS = ("push", "sms", "email")
DEFAULT_ORDER = ("push", "sms", "email")
SENDERS: dict[str, ChannelSender] = {
    "email": service.send_email,
    "sms": service.send_sms,
    "push": service.send_push,
}


class NoChannelError(RecipientError):
    """Raised when no channel can reach the user (opted out, no address) or all failed for good."""


@dataclass(frozen=True)
class Delivered:
    channel: str
    result: DeliveryResult
    skipped: tuple[tuple[str, str], ...] = ()  # (channel, why) tried before it

    def summary(self) -> dict[str, Any]:
        return {
            **self.result.summary(),
            "channel": self.channel,
            "fell_back_from": [{"channel": c, "reason": why} for c, why in self.skipped],
        }


@dataclass(frozen=True)
class Deferred:
    until: datetime  # aware, UTC

    def summary(self) -> dict[str, Any]:
        return {"status": "deferred", "until": self.until.isoformat()}


def reachable_channels(user: User, requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The channels to try in order, and why the others were left out."""
    order = list(requested or user.channel_order or DEFAULT_ORDER)
    has = {"email": bool(user.email), "sms": bool(user.phone), "push": bool(user.push_tokens)}
    channels, left_out = [], []
    for channel in dict.fromkeys(order):  # keeps the order, drops repeats
        if channel not in CHANNELS:
            left_out.append(f"{channel}: unknown channel")
        elif channel in (user.opted_out or []):
            left_out.append(f"{channel}: opted out")
        elif not has[channel]:
            left_out.append(f"{channel}: no {'device' if channel == 'push' else 'address'}")
        else:
            channels.append(channel)
    return channels, left_out


def notify_user(
    notifier: Notifier,
    *,
    user_id: int,
    template: str,
    context: dict[str, Any],
    idempotency_key: str,
    message_id: str,
    channels: Sequence[str] | None = None,
    critical: bool = False,
    resend_unknown: bool = False,
    now: datetime | None = None,
    actor_name: str = "notifications.notify_user",
) -> Delivered | Deferred:
    """Deliver one notification on the first channel that works; see the module docstring."""
    user = service.load_user(notifier.engine, user_id)
    for channel in CHANNELS:
        earlier = notifier.ledger.get(f"{idempotency_key}:{channel}", channel)
        if earlier is not None and earlier.status in (SENT, UNKNOWN):
            logger.info("Notification %s already delivered by %s (%s); not repeated.",
                        idempotency_key, channel, earlier.status)  # fmt: skip
            status = "duplicate" if earlier.status == SENT else "unknown"
            return Delivered(channel, DeliveryResult(status, idempotency_key, earlier.provider_message_id))

    skipped: list[tuple[str, str]] = []

    def skip(channel: str, why: str) -> None:
        # A failed send keeps its own "failed" row; only a channel without one gets "skipped".
        skipped.append((channel, why))
        notifier.ledger.record(
            f"{idempotency_key}:{channel}",
            status=SKIPPED,
            channel=channel,
            actor_name=actor_name,
            message_id=message_id,
            user_id=user_id,
            error=why,
        )

    order, left_out = reachable_channels(user, channels)
    if not order:
        raise NoChannelError(f"no channel can reach user {user_id}: " + "; ".join(left_out))
    try:
        check_quiet_hours(user, order[0], critical=critical, now=now)
    except QuietHours as e:
        return Deferred(e.until)
    open_breakers: list[CircuitOpenError] = []
    quiet: datetime | None = None
    for channel in order:
        try:
            result = SENDERS[channel](
                notifier,
                user_id=user_id,
                template=template,
                context=context,
                idempotency_key=f"{idempotency_key}:{channel}",
                message_id=message_id,
                critical=critical,
                resend_unknown=resend_unknown,
                now=now,
            )
        except QuietHours as e:  # a fallback to SMS or push at night: wait for the morning
            quiet = e.until
            skipped.append((channel, f"quiet hours until {e.until.isoformat()}"))
        except CircuitOpenError as e:
            open_breakers.append(e)
            skip(channel, str(e))
        except TemplateTooLongError as e:  # too long for this channel: another may take it
            skip(channel, f"{type(e).__name__}: {e}")
        except TemplateError:
            raise  # a bug in a template or its context: dead-lettered, naming it
        except PermanentError as e:  # not configured, no device left, invalid number, refused...
            skip(channel, f"{type(e).__name__}: {e}")
        else:
            if skipped:
                logger.info(
                    "Notification %s fell back to %s after %s.",
                    idempotency_key,
                    channel,
                    ", ".join(c for c, _ in skipped),
                )
            return Delivered(channel, result, tuple(skipped))
    return _undelivered(user_id, skipped, open_breakers, quiet, now)


def _undelivered(
    user_id: int,
    skipped: list[tuple[str, str]],
    open_breakers: list[CircuitOpenError],
    quiet: datetime | None,
    now: datetime | None,
) -> Deferred:
    """No channel delivered: wait for whichever comes first, a breaker half-opening or the end of
    quiet hours; if neither can help, every channel failed for good."""
    if open_breakers:
        soonest = min(open_breakers, key=lambda e: e.retry_after)
        if quiet is None or (now or datetime.now(UTC)) + timedelta(seconds=soonest.retry_after) < quiet:
            raise soonest
    if quiet is not None:
        return Deferred(quiet)
    reasons = "; ".join(f"{c}: {why}" for c, why in skipped)
    raise NoChannelError(f"every channel failed for user {user_id}: {reasons}")
