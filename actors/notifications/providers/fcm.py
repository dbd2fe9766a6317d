"""FCM adapter: push notifications through the real ``firebase-admin`` SDK (FCM HTTP v1).

firebase-admin reaches FCM only through its messaging service's ``_fcm_url``; ``FcmSender`` points
it at ``EDUJOBS_FCM_BASE_URL`` (a local fake in tests), applies a timeout, and replaces the SDK's own
retries of 500/503 (about 7 s of backoff inside one call) with none: a failed call becomes a
``TransientError`` and Dramatiq's Retries schedules the next attempt, without holding a worker thread.

Credentials: a service-account JSON file (``EDUJOBS_FCM_CREDENTIALS_FILE``) in production; without
one, and only when the base URL is not Google's, static test credentials that need no network.

Errors, per device token:

- UNREGISTERED, SENDER_ID_MISMATCH, or an INVALID_ARGUMENT about the registration token itself
  ("not a valid FCM registration token", or a field violation on ``message.token``) →
  ``DeadTokenError``: this token will never work again; the caller removes it from the user;
- any other INVALID_ARGUMENT (a bad payload: too large, bad data keys...) → ``ProviderRejectedError``:
  permanent, but our fault, so the user's tokens are kept;
- QUOTA_EXCEEDED (429) → ``RateLimitedError`` with the response's Retry-After (seconds or HTTP date);
- UNAVAILABLE, INTERNAL (an answer from FCM: 500, 503), a refused connection or a connect timeout
  → ``ProviderUnavailableError`` (a 503's Retry-After honoured);
- a failure after the request may have reached FCM (the connection reset or closed while waiting
  for the answer, a read timeout, a gateway's 502 or 504) → ``OutcomeUnknownError``: the push may
  have been delivered, so the ledger applies its unknown-outcome policy (``store.once``). The SDK
  turns those into ``DeadlineExceededError``, ``UnavailableError`` or ``UnknownError``, like real
  answers; the cut is made on the error's ``cause`` (the requests exception) and HTTP status.
  The SDK's own retries (which would resend after a read error, and after 500 and 503) are off;
- anything else (authentication, permission) → ``ProviderRejectedError``.

Every call runs inside the ``fcm`` circuit breaker's guard.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import firebase_admin
import google.auth.credentials
import requests.adapters
from firebase_admin import credentials, exceptions, messaging

from actors.notifications.providers.outcome import AMBIGUOUS_STATUSES, requests_request_left
from actors.notifications.providers.retry_after import header, parse_retry_after
from actors.notifications.providers.transport import MarkingAdapter
from contracts.errors import (
    ConfigurationError,
    PermanentError,
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
)
from middleware.breaker_storage import guard
from store.once import OutcomeUnknownError

logger = logging.getLogger(__name__)

FCM_API = "https://fcm.googleapis.com"
_apps = itertools.count(1)


class DeadTokenError(PermanentError):
    """Raised when FCM says a device token is unregistered or invalid: it must be removed."""


class _StaticCredentials(google.auth.credentials.Credentials):
    """Credentials that need no network: a fixed bearer token, for a local FCM stand-in."""

    def __init__(self, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.token = token
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=3650)

    def refresh(self, request: Any) -> None:
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=3650)


class _StaticCredential(credentials.Base):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._credential = _StaticCredentials(token)

    def get_credential(self) -> google.auth.credentials.Credentials:
        return self._credential


@dataclass(frozen=True)
class Push:
    token: str
    title: str
    body: str
    data: dict[str, str] = field(default_factory=dict)


class FcmSender:
    """Sends push notifications to device tokens through FCM HTTP v1."""

    def __init__(
        self,
        *,
        project_id: str,
        base_url: str = FCM_API,
        timeout: float = 10.0,
        credentials_file: str | None = None,
    ) -> None:
        base_url = base_url.rstrip("/")
        if credentials_file:
            credential: credentials.Base = credentials.Certificate(credentials_file)
        elif base_url != FCM_API:
            credential = _StaticCredential("edujobs-local-fcm")
        else:
            raise ConfigurationError(
                "FCM needs EDUJOBS_FCM_CREDENTIALS_FILE (a service-account JSON file) to reach Google"
            )
        # A named app of our own: the process's default Firebase app (if any) is left alone.
        self.app = firebase_admin.initialize_app(
            credential,
            {"projectId": project_id, "httpTimeout": timeout},
            name=f"edujobs-fcm-{next(_apps)}",
        )
        service = messaging._get_messaging_service(self.app)
        service._fcm_url = f"{base_url}/v1/projects/{project_id}/messages:send"
        # No retries inside the SDK (see the module docstring), and connections that mark the
        # ledger's claim "sending" once connected (``transport``); mounted on the base URL, whose
        # prefix is longer than the http:// and https:// adapters the SDK mounted.
        service._client.session.mount(base_url, MarkingAdapter(max_retries=0))
        self.base_url = base_url

    def close(self) -> None:
        firebase_admin.delete_app(self.app)

    def send(self, push: Push) -> str:
        """Send one notification to one device token; return FCM's message name."""
        with guard("fcm"):
            return self._send(push)

    def _send(self, push: Push) -> str:
        message = messaging.Message(
            token=push.token,
            notification=messaging.Notification(title=push.title, body=push.body),
            data=dict(push.data) or None,
        )
        try:
            return str(messaging.send(message, app=self.app))
        except exceptions.FirebaseError as e:
            raise translate_error(e) from None
        except (requests.RequestException, OSError) as e:
            raise _transport_error(e) from None


def _transport_error(error: BaseException) -> Exception:
    if requests_request_left(error):
        return OutcomeUnknownError(f"no answer from FCM, the push may have been delivered: {error}")
    return ProviderUnavailableError(f"FCM unreachable: {error}")


def translate_error(error: exceptions.FirebaseError) -> Exception:
    detail = str(error)[:300] or type(error).__name__
    if isinstance(error.cause, requests.RequestException | OSError) and error.http_response is None:
        return _transport_error(error.cause)  # no answer came: what did the transport see?
    status = error.http_response.status_code if error.http_response is not None else None
    if status in AMBIGUOUS_STATUSES:
        return OutcomeUnknownError(
            f"FCM's gateway answered {status}, the push may have been delivered: {detail}"
        )
    if isinstance(error, messaging.UnregisteredError | messaging.SenderIdMismatchError):
        return DeadTokenError(f"FCM refused the device token: {detail}")
    if isinstance(error, exceptions.InvalidArgumentError):
        if _about_the_token(error):
            return DeadTokenError(f"FCM refused the device token: {detail}")
        return ProviderRejectedError(f"FCM refused the notification as invalid: {detail}")
    if isinstance(error, messaging.QuotaExceededError | exceptions.ResourceExhaustedError):
        return RateLimitedError(f"FCM quota exceeded: {detail}", retry_after=_retry_after(error))
    if isinstance(
        error,
        exceptions.UnavailableError
        | exceptions.InternalError
        | exceptions.DeadlineExceededError
        | exceptions.UnknownError,
    ):
        return ProviderUnavailableError(f"FCM unavailable: {detail}", retry_after=_retry_after(error))
    return ProviderRejectedError(f"FCM refused the notification ({type(error).__name__}): {detail}")


def _retry_after(error: exceptions.FirebaseError) -> float | None:
    response = error.http_response
    return parse_retry_after(header(response.headers)) if response is not None else None


def _about_the_token(error: exceptions.FirebaseError) -> bool:
    """Whether an INVALID_ARGUMENT names the registration token (not the rest of the message).

    FCM says so in the message ("The registration token is not a valid FCM registration token") and,
    in newer responses, in a ``google.rpc.BadRequest`` field violation on ``message.token``."""
    if "registration token" in str(error).lower():
        return True
    response = error.http_response
    try:
        details = response.json()["error"].get("details") or [] if response is not None else []
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    for detail in details:
        for violation in (detail.get("fieldViolations") or []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False
