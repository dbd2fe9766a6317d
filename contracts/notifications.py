"""Contracts of the notifications domain."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

from contracts.registry import Contract, register


class TemplatedMessage(Contract):
    """One templated message to one user, on one channel."""

    user_id: int = Field(gt=0, description="Recipient's user id.")
    template: str = Field(
        min_length=1, max_length=100, pattern=r"^[a-z0-9_]+$", description="Template name, e.g. welcome."
    )
    context: dict[str, Any] = Field(default_factory=dict, description="Variables for the template.")
    idempotency_key: str | None = Field(
        default=None,
        max_length=200,
        description="Sends at most one message per key; defaults to the message id.",
    )


class EmailAttachment(Contract):
    """A file in edujobs' storage, attached to an email."""

    storage_key: str = Field(min_length=1, max_length=1024, description="Key of the file in storage.")
    filename: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\]+$", description="Name shown.")
    mime_type: str = Field(default="application/octet-stream", max_length=127, pattern=r"^[\w.+-]+/[\w.+-]+$")


@register("notifications.send_email", queue="notifications", priority="normal")
class SendEmail(TemplatedMessage):
    """Send one templated email to one user, with attachments from storage if any."""

    attachments: list[EmailAttachment] = Field(default_factory=list, max_length=10)


@register("notifications.send_sms", queue="notifications", priority="normal")
class SendSms(TemplatedMessage):
    """Send one templated SMS to one user's phone."""


@register("notifications.send_push", queue="notifications", priority="normal")
class SendPush(TemplatedMessage):
    """Send one templated push notification to each of one user's devices."""


@register("notifications.notify_user", queue="notifications", priority="normal")
class NotifyUser(TemplatedMessage):
    """Notify one user on the first channel that works, in their preferred order (or ``channels``),
    respecting quiet hours unless the message's priority is critical."""

    channels: list[Literal["push", "sms", "email"]] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="Channels to try, in order; default: the user's own preference (push, sms, email).",
    )


@register("notifications.send_bulk_email", queue="notifications", priority="bulk")
class SendBulkEmail(Contract):
    """Send one templated email to many users, batched (1,000 recipients per SendGrid request).

    The template is rendered once; ``-name-`` in it stands for each recipient's name."""

    user_ids: list[int] = Field(min_length=1, max_length=50_000, description="Recipients' user ids.")
    template: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9_]+$", description="Template name.")
    context: dict[str, Any] = Field(default_factory=dict, description="Variables for the template.")
    idempotency_key: str | None = Field(
        default=None,
        max_length=200,
        description="Sends each batch at most once per key; default: message id.",
    )


DigestKind = Literal["weekly", "daily_grade"]


@register("notifications.add_digest_event", queue="notifications", priority="low")
class AddDigestEvent(Contract):
    """Keep an event for the user's next digest instead of notifying them now."""

    user_id: int = Field(gt=0)
    kind: DigestKind
    payload: dict[str, Any] = Field(
        description="weekly: {kind, summary}; daily_grade: {course, assignment, score, max_score}."
    )


@register("notifications.send_digest", queue="notifications", priority="low")
class SendDigest(Contract):
    """Merge one user's pending events of a kind within [window_start, window_end) into one message."""

    user_id: int = Field(gt=0)
    kind: DigestKind
    window_start: AwareDatetime
    window_end: AwareDatetime


@register("notifications.send_weekly_digests", queue="notifications", priority="low")
class SendWeeklyDigests(Contract):
    """Scheduled: one send_digest per user with weekly events in the 7 days before ``as_of``."""

    as_of: AwareDatetime | None = Field(default=None, description="The schedule's fire time; default: now.")
