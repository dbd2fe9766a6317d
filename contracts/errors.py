"""The edujobs exception hierarchy, shared by producers, middleware and actors.

Everything edujobs raises on purpose derives from one root::

    EdujobsError
    ├── PermanentError            no retry: the message goes to the dead-letter queue at once
    │   ├── ContractError         a payload does not match its actor's contract
    │   ├── UnknownActorError     no contract is registered under that actor name
    │   ├── TemplateError         a missing template or template variable
    │   ├── RecipientError        the recipient cannot be reached (no address, unknown user)
    │   ├── ProviderRejectedError a provider refused the request (4xx)
    │   └── ProcessingCancelledError  the job was cancelled while it ran (the actor acks it)
    ├── TransientError            retried with exponential backoff and jitter
    │   ├── RateLimitedError      the provider asked us to slow down (carries retry_after)
    │   ├── ProviderUnavailableError  5xx, timeouts, connection errors
    │   └── InProgressError       another attempt is performing the same side effect right now
    └── ConfigurationError        a setting is missing or invalid (start-up fails)

The module imports nothing heavier than the standard library so that any process can use it.
"""

from __future__ import annotations


class EdujobsError(Exception):
    """Raised for every error edujobs raises on purpose."""


class PermanentError(EdujobsError):
    """Raised when retrying cannot help; the message is dead-lettered without retries."""


class ProcessingCancelledError(PermanentError):
    """Raised when the job was cancelled (job state ``cancelled``) while it was running."""


class TransientError(EdujobsError):
    """Raised when a later attempt may succeed; the message is retried with backoff.

    ``retry_after`` (seconds), when set, is the least delay before the next attempt.

    ``spends_retry`` is False for an error that means "not yet" rather than "failed" (another
    attempt holds the side effect): the message is retried after ``retry_after`` (else the
    minimum backoff) without counting one of its retries.
    """

    spends_retry: bool = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(EdujobsError):
    """Raised when a setting is missing or invalid."""


class ContractError(PermanentError):
    """Raised when a payload does not match the contract of its actor."""


class UnknownActorError(PermanentError):
    """Raised when no contract is registered under an actor name."""


class TemplateError(PermanentError):
    """Raised when a template or one of its variables is missing."""


class RecipientError(PermanentError):
    """Raised when a recipient does not exist or has no address on the channel."""


class ProviderRejectedError(PermanentError):
    """Raised when a provider refuses a request for a reason retrying cannot fix (4xx)."""


class RateLimitedError(TransientError):
    """Raised when a provider rate-limits us (HTTP 429)."""


class ProviderUnavailableError(TransientError):
    """Raised when a provider is down, slow or unreachable (5xx, timeout, connection error)."""


class InProgressError(TransientError):
    """Raised when another attempt holds the ledger entry of the same side effect right now.

    It does not spend a retry: the message looks again after ``retry_after`` (set by the raiser
    to when the other attempt's claim can be judged), however long that takes."""

    spends_retry = False
