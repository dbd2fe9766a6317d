"""Contracts of the notifications domain."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator

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


#: Attachments are read from this storage prefix only. Storage also holds database backups,
#: reports, archives and media (personal data, token hashes); whoever may enqueue an email must not
#: be able to mail any of it to an address of their choosing. A producer that wants to attach a
#: report copies it under this prefix first (or sends its download link).
ATTACHMENTS_PREFIX = "attachments/"


class EmailAttachment(Contract):
    """A file in edujobs' storage under ``attachments/``, attached to an email."""

    storage_key: str = Field(
        min_length=len(ATTACHMENTS_PREFIX) + 1,
        max_length=1024,
        description=f"Key of the file in storage; only keys under {ATTACHMENTS_PREFIX} are attachable.",
        json_schema_extra={"pattern": f"^{ATTACHMENTS_PREFIX}"},
    )
    filename: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\]+$", description="Name shown.")
    mime_type: str = Field(default="application/octet-stream", max_length=127, pattern=r"^[\w.+-]+/[\w.+-]+$")

    @field_validator("storage_key")
    @classmethod
    def _attachable(cls, key: str) -> str:
        check_attachable(key)
        return key


def check_attachable(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` lies under ``ATTACHMENTS_PREFIX`` and stays there (no
    ``.``/``..``/empty segment, no backslash: ``attachments/../backups/db`` names a backup). The
    worker checks again before reading, whatever validated the message."""
    climbs = "\\" in key or any(part in ("", ".", "..") for part in key.split("/"))
    if climbs or not key.startswith(ATTACHMENTS_PREFIX):
        raise ValueError(
            f"{key!r} is not attachable: attachments come from {ATTACHMENTS_PREFIX} only "
            f"(copy the file there, or send its download link)"
        )


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
