"""Actors of the notifications domain: thin adapters from messages to ``service`` calls."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from dramatiq.middleware import CurrentMessage

from actors.base import actor, current_idempotency_key, current_message_id, enqueue, report_progress
from actors.notifications import bulk, digests, rate_limit, routing, service
from actors.notifications.quiet import QuietHours
from contracts.priorities import PRIORITIES


def _priority() -> tuple[str | None, bool, bool]:
    """The current message's priority name (if it carries one), whether it is critical, and
    whether it is urgent enough to be sent again after an unknown outcome (critical and high:
    the unknown-outcome policy of ``store.once``)."""
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    name = options.get("priority_name")
    level = int(options.get("broker_priority") or 0)
    critical = name == "critical" or level >= PRIORITIES["critical"]
    urgent = name in ("critical", "high") or level >= PRIORITIES["high"]
    return (name if isinstance(name, str) and name in PRIORITIES else None), critical, urgent


def _send_after_quiet_hours(actor_name: str, payload: dict[str, Any], key: str, until: datetime) -> None:
    """The same message (same ledger key) again once the user's quiet hours end, parked in
    RabbitMQ's delay queue (durable across worker restarts), at the same priority."""
    enqueue(
        actor_name,
        payload,
        idempotency_key=f"{key}:after-quiet:{until.isoformat()}",
        priority=_priority()[0],
        delay=max(1.0, (until - datetime.now(UTC)).total_seconds() + 1),
    )


def _arguments(user_id: int, template: str, context: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """What every sender of one templated notification takes, from the message being processed."""
    _, critical, urgent = _priority()
    return {"user_id": user_id, "template": template, "context": context or {}, "idempotency_key": key,
            "message_id": current_message_id(), "critical": critical, "resend_unknown": urgent}  # fmt: skip


def _deliver(
    actor_name: str,
    send: service.ChannelSender,
    user_id: int,
    template: str,
    context: dict[str, Any] | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    key = idempotency_key or current_idempotency_key()
    try:
        result = send(service.default_notifier(), **_arguments(user_id, template, context, key))
    except QuietHours as e:
        payload = {"user_id": user_id, "template": template, "context": context or {}, "idempotency_key": key}
        _send_after_quiet_hours(actor_name, payload, key, e.until)
        return {"status": "deferred", "until": e.until.isoformat()}
    return result.summary()


@actor("notifications.send_email", time_limit=60_000, max_retries=8, max_backoff=3_600_000)
def send_email(
    user_id: int,
    template: str,
    context: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    attachments: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    send = functools.partial(service.send_email, attachments=attachments or [])
    return _deliver("notifications.send_email", send, user_id, template, context, idempotency_key)


@actor("notifications.send_sms", time_limit=30_000, max_retries=8, max_backoff=3_600_000)
def send_sms(
    user_id: int, template: str, context: dict[str, Any] | None = None, idempotency_key: str | None = None
) -> dict[str, Any]:
    return _deliver("notifications.send_sms", service.send_sms, user_id, template, context, idempotency_key)


@actor("notifications.send_push", time_limit=60_000, max_retries=8, max_backoff=3_600_000)
def send_push(
    user_id: int, template: str, context: dict[str, Any] | None = None, idempotency_key: str | None = None
) -> dict[str, Any]:
    return _deliver("notifications.send_push", service.send_push, user_id, template, context, idempotency_key)


@functools.cache
def _bulk_bucket() -> bulk.Bucket:
    settings = service.default_notifier().settings
    return rate_limit.bulk_bucket(settings.sendgrid_bulk_rate, settings.redis_url)


@actor("notifications.send_bulk_email", time_limit=3_600_000, max_retries=5, max_backoff=3_600_000)
def send_bulk_email(
    user_ids: list[int],
    template: str,
    context: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    result = bulk.send_bulk_email(
        service.default_notifier(),
        _bulk_bucket(),
        user_ids=user_ids,
        template=template,
        context=context or {},
        idempotency_key=idempotency_key or current_idempotency_key(),
        message_id=current_message_id(),
        progress=report_progress,
    )
    return result.summary()


@actor("notifications.notify_user", time_limit=120_000, max_retries=8, max_backoff=3_600_000)
def notify_user(
    user_id: int,
    template: str,
    context: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    channels: list[str] | None = None,
) -> dict[str, Any]:
    key = idempotency_key or current_idempotency_key()
    arguments = _arguments(user_id, template, context, key)
    notifier = service.default_notifier()
    outcome = routing.notify_user(notifier, channels=channels, **arguments)
    if isinstance(outcome, routing.Delivered) and outcome.result.status == "sent":
        digests.record_weekly_events(notifier.engine, user_id, template, context or {})
    if isinstance(outcome, routing.Deferred):
        payload = {"user_id": user_id, "template": template, "context": context or {},
                   "idempotency_key": key, "channels": channels}  # fmt: skip
        _send_after_quiet_hours("notifications.notify_user", payload, key, outcome.until)
    return outcome.summary()


@actor("notifications.add_digest_event", time_limit=30_000, max_retries=5, max_backoff=600_000)
def add_digest_event(user_id: int, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    event_id = digests.record_digest_event(service.default_notifier().engine, user_id, kind, payload)
    return {"event_id": event_id}


@actor("notifications.send_digest", time_limit=120_000, max_retries=8, max_backoff=3_600_000)
def send_digest(user_id: int, kind: str, window_start: str, window_end: str) -> dict[str, Any]:
    result = digests.send_digest(
        service.default_notifier(),
        user_id=user_id,
        kind=kind,
        window_start=datetime.fromisoformat(window_start),
        window_end=datetime.fromisoformat(window_end),
        message_id=current_message_id(),
    )
    if result.until is not None:  # quiet hours: the same digest again once they end
        payload = {"user_id": user_id, "kind": kind, "window_start": window_start, "window_end": window_end}
        enqueue(
            "notifications.send_digest",
            payload,
            idempotency_key=f"digest:{kind}:{user_id}:{window_end}:after-quiet:{result.until.isoformat()}",
            delay=max(1.0, (result.until - datetime.now(UTC)).total_seconds() + 1),
        )
    return result.summary()


@actor("notifications.send_weekly_digests", time_limit=600_000, max_retries=3, max_backoff=600_000)
def send_weekly_digests(as_of: str | None = None) -> dict[str, Any]:
    # Without as_of (the scheduler sends none), the hour of the run: a rerun within the hour makes
    # the same per-user keys, so no digest goes out twice.
    end = (
        datetime.fromisoformat(as_of)
        if as_of
        else datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )
    start = end - digests.WEEK
    users = digests.due_digests(service.default_notifier().engine, "weekly", start, end)
    for user_id in users:
        enqueue(
            "notifications.send_digest",
            {
                "user_id": user_id,
                "kind": "weekly",
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
            },
            idempotency_key=f"digest:weekly:{user_id}:{end.isoformat()}",
        )
    return {"users": len(users), "window_start": start.isoformat(), "window_end": end.isoformat()}
