"""Quiet hours: no SMS or push between a user's ``quiet_hours_start`` and ``quiet_hours_end`` in
their own time zone, unless the notification is critical (an email does not wake anyone).

The check lives where SMS and push are sent (``service.send_sms`` / ``service.send_push``), so every
path obeys it: the direct actors, ``notify_user``'s first channel and its fallbacks, digests. A send
during quiet hours raises ``QuietHours`` carrying the end of the period; the caller parks the message
in RabbitMQ until then (durably, through the broker's delay queue), or ``notify_user`` defers the
whole notification.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from store.models import User

logger = logging.getLogger(__name__)

#: Channels that must stay silent during a user's quiet hours.
QUIET_CHANNELS = frozenset({"push", "sms"})


class QuietHours(Exception):
    """Raised when an SMS or push would reach the user during their quiet hours; ``until`` is the
    instant (aware, UTC) they end. Callers catch it and send again then."""

    def __init__(self, channel: str, user_id: int, until: datetime) -> None:
        super().__init__(
            f"{channel} to user {user_id} waits for the end of quiet hours ({until.isoformat()})"
        )
        self.channel = channel
        self.until = until


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


def user_quiet_until(user: User, now: datetime | None = None) -> datetime | None:
    """When the user's current quiet period ends, or None if they are not in one."""
    return quiet_until(
        user.quiet_hours_start, user.quiet_hours_end, user_zone(user), now or datetime.now(UTC)
    )


def check_quiet_hours(user: User, channel: str, *, critical: bool, now: datetime | None = None) -> None:
    """Raise ``QuietHours`` if ``channel`` must not reach ``user`` now."""
    if critical or channel not in QUIET_CHANNELS:
        return
    until = user_quiet_until(user, now)
    if until is not None:
        raise QuietHours(channel, user.id, until)
