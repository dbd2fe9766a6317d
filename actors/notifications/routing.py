"""Routing a notification to a user: which channels, in which order, when, and falling back.

``notify_user`` (no dramatiq here; the actor adapts it) takes the user's channel order (default
push → SMS → email) or the sender's, drops the channels the user opted out of or cannot be reached
on, and tries them in turn:

- **quiet hours**: no SMS or push between the user's ``quiet_hours_start`` and ``quiet_hours_end`` in
  their own time zone (a period may cross midnight; DST is handled by zoneinfo), unless the
  notification is critical. If the user's first channel is SMS or push, the whole notification
  waits for the end of the quiet period (``Deferred``: the actor re-enqueues it with that delay,
  durably parked in RabbitMQ) rather than falling through to a channel the user ranks lower;
- **fallback**: when a channel's circuit breaker is open or the channel fails permanently for this
  user (no device left, invalid number, opt-out...), the next channel is tried. Each channel attempt
  has its own ledger key (``<key>:<channel>``), whose row records the failure and its reason, so an
  operator sees why an SMS went out instead of a push;
- **once**: if any channel of this notification was already delivered (a redelivered or retried
  message), nothing is sent again.

If no channel delivered: when some were skipped only because their breaker is open, the
``CircuitOpenError`` is raised (the CircuitBreakers middleware delays the message until the breaker
half-opens, spending no retry); otherwise a ``PermanentError`` names each channel's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from actors.notifications import service
from actors.notifications.service import ChannelSender, DeliveryResult, Notifier
from contracts.errors import PermanentError, RecipientError
from middleware.breaker_storage import CircuitOpenError
from store.models import User

logger = logging.getLogger(__name__)

CHANNELS = ("push", "sms", "email")
DEFAULT_ORDER = ("push", "sms", "email")
#: Channels that must stay silent during a user's quiet hours (an email does not wake anyone).
QUIET_CHANNELS = frozenset({"push", "sms"})
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


def user_zone(user: User) -> ZoneInfo:
    try:
        return ZoneInfo(user.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("User %s has an unknown time zone; quiet hours use UTC.", user.id)
        return ZoneInfo("UTC")


def quiet_until(start: time, end: time, zone: ZoneInfo, now: datetime) -> datetime | None:
    """If ``now`` falls in the quiet period [start, end) of local time in ``zone``, the instant (UTC)
    it ends; else None. A period whose end is before its start crosses midnight; start == end means
    no quiet hours."""
    if start == end:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        end_day = local.date()
    else:  # crosses midnight: 21:00-07:00
        inside = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not inside:
        return None
    return _local_instant(end_day, end, zone)


def _local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """``day`` at ``at`` in ``zone`` as UTC. A wall time repeated by a DST change is its first
    occurrence; one skipped by a change is read with the offset before it, which lands after the gap."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


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
    now: datetime | None = None,
) -> Delivered | Deferred:
    """Deliver one notification on the first channel that works; see the module docstring."""
    user = service.load_user(notifier.engine, user_id)
    for channel in CHANNELS:
        earlier = notifier.ledger.get(f"{idempotency_key}:{channel}")
        if earlier is not None and earlier.status == "sent":
            logger.info("Notification %s already delivered by %s; not repeated.", idempotency_key, channel)
            duplicate = DeliveryResult("duplicate", idempotency_key, earlier.provider_message_id)
            return Delivered(channel, duplicate)
    order, left_out = reachable_channels(user, channels)
    if not order:
        raise NoChannelError(f"no channel can reach user {user_id}: " + "; ".join(left_out))
    if not critical and order[0] in QUIET_CHANNELS:
        zone = user_zone(user)
        until = quiet_until(user.quiet_hours_start, user.quiet_hours_end, zone, now or datetime.now(UTC))
        if until is not None:
            return Deferred(until)
    skipped: list[tuple[str, str]] = []
    open_breakers: list[CircuitOpenError] = []
    for channel in order:
        try:
            result = SENDERS[channel](
                notifier,
                user_id=user_id,
                template=template,
                context=context,
                idempotency_key=f"{idempotency_key}:{channel}",
                message_id=message_id,
            )
        except CircuitOpenError as e:
            open_breakers.append(e)
            skipped.append((channel, str(e)))
        except PermanentError as e:
            skipped.append((channel, f"{type(e).__name__}: {e}"))
        else:
            if skipped:
                logger.info(
                    "Notification %s fell back to %s after %s.",
                    idempotency_key,
                    channel,
                    ", ".join(c for c, _ in skipped),
                )
            return Delivered(channel, result, tuple(skipped))
    if open_breakers:
        raise min(open_breakers, key=lambda e: e.retry_after)
    reasons = "; ".join(f"{c}: {why}" for c, why in skipped)
    raise NoChannelError(f"every channel failed for user {user_id}: {reasons}")
