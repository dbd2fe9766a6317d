"""Errors of the notifications domain (see ``contracts.errors`` for the whole tree)."""

from __future__ import annotations

from contracts.errors import InProgressError, PermanentError, RecipientError, TemplateError


class OptedOutError(PermanentError):
    """Raised when the recipient has opted out of the channel."""


class AttachmentTooLargeError(PermanentError):
    """Raised when an email's attachments are too large for the provider."""


class AttachmentNotAllowedError(PermanentError):
    """Raised when an email names an attachment outside the storage prefix meant for attachments
    (``attachments/``): backups, reports, archives and media are never mailed out."""


class ChannelNotConfiguredError(PermanentError):
    """Raised when a channel's provider has no credentials in the settings (the message is
    dead-lettered; requeue it once the settings are in place)."""


__all__ = [
    "AttachmentNotAllowedError",
    "AttachmentTooLargeError",
    "ChannelNotConfiguredError",
    "InProgressError",
    "OptedOutError",
    "RecipientError",
    "TemplateError",
]
