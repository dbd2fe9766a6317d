"""Twilio adapter: the real ``twilio`` client sending SMS, with a timeout, its errors translated.

Twilio's client has no base-URL option: ``_HostClient``, a ``TwilioHttpClient`` subclass, swaps
``https://api.twilio.com`` for the configured base URL (a local fake in tests) and applies the
timeout to every request. Errors are caught as ``TwilioException`` (errors in RFC 9457 form are not
``TwilioRestException``) and translated:

- 429 → ``RateLimitedError`` carrying the response's Retry-After (seconds or an HTTP date);
- 500, 503, 408, a connection refused or a connect timeout → ``ProviderUnavailableError`` (retried;
  a 503's Retry-After is honoured);
- a failure after the request may have reached Twilio (the connection reset or closed while
  waiting for the answer, a read timeout, a gateway's 502 or 504) → ``OutcomeUnknownError``: the SMS
  may have gone out, so the ledger applies its unknown-outcome policy instead of sending it again
  (``store.once``; the cut is made by ``providers.outcome``);
- an invalid or unreachable number (Twilio codes 21211, 21614, 21408, 21610, 21612...) →
  ``RecipientError``; any other 4xx → ``ProviderRejectedError`` (permanent).

Every call runs inside the ``twilio`` circuit breaker's guard.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from actors.notifications.providers.outcome import AMBIGUOUS_STATUSES, requests_request_left
from actors.notifications.providers.retry_after import header, parse_retry_after
from actors.notifications.providers.transport import MarkingAdapter
from contracts.errors import (
    ProviderRejectedError,
    ProviderUnavailableError,
    RateLimitedError,
    RecipientError,
)
from middleware.breaker_storage import guard
from store.once import OutcomeUnknownError

logger = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"

#: Twilio error codes meaning the number itself cannot receive this SMS: retrying cannot help, and
#: the notification should fall back to another channel.
RECIPIENT_ERROR_CODES = frozenset({21211, 21214, 21217, 21408, 21610, 21612, 21614, 21635})


class _HostClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """Sends Twilio's requests to ``base_url`` instead of api.twilio.com, with a timeout, and keeps
    the last response of each thread (its Retry-After header is not on Twilio's exception)."""

    def __init__(self, *, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")
        # Connections that mark the ledger's claim "sending" once connected (``transport``), with
        # the SDK's own pool size; mounted on the base URL, longer than the SDK's https:// prefix.
        self.session.mount(self.base_url, MarkingAdapter(pool_maxsize=min(32, (os.cpu_count() or 1) + 4)))
        self._local = threading.local()

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        self._local.response = None
        response: Response = super().request(
            method, url, params, data, headers, auth, timeout, allow_redirects
        )
        self._local.response = response
        return response

    def last_headers(self) -> dict[str, str]:
        response = getattr(self._local, "response", None)
        return dict(response.headers or {}) if response is not None else {}


@dataclass(frozen=True)
class Sms:
    to: str
    body: str


class TwilioSender:
    """Sends SMS through Twilio's Messages API."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str = TWILIO_API,
        timeout: float = 10.0,
        status_callback: str | None = None,
    ) -> None:
        self.http = _HostClient(base_url=base_url, timeout=timeout)
        self.client = Client(account_sid, auth_token, http_client=self.http)
        self.from_number = from_number
        self.status_callback = status_callback

    def send(self, sms: Sms) -> str:
        """Send one SMS; return Twilio's message SID."""
        with guard("twilio"):
            return self._create(sms)

    def _create(self, sms: Sms) -> str:
        options: dict[str, Any] = {"to": sms.to, "from_": self.from_number, "body": sms.body}
        if self.status_callback:
            options["status_callback"] = self.status_callback
        try:
            message = self.client.messages.create(**options)
        except TwilioException as e:
            raise translate_error(e, self.http.last_headers()) from None
        except (requests.RequestException, OSError) as e:
            raise transport_error(e) from None
        return str(message.sid)


def transport_error(error: BaseException) -> Exception:
    """The edujobs error for a call that got no answer: unknown outcome once the request left."""
    if not requests_request_left(error):
        return ProviderUnavailableError(f"Twilio unreachable: {error}")
    if isinstance(error, requests.Timeout):
        return OutcomeUnknownError(f"Twilio did not answer in time: {error}")
    return OutcomeUnknownError(f"the connection to Twilio broke before its answer: {error}")


def translate_error(error: TwilioException, headers: dict[str, str]) -> Exception:
    """The edujobs error for a Twilio exception: legacy (``TwilioRestException``), RFC 9457
    (``TwilioServiceException``) or anything else the SDK raised."""
    if isinstance(error, TwilioRestException):
        status, code, detail = int(error.status or 0), error.code, str(error.msg or "no detail")
    elif isinstance(error, TwilioServiceException):
        status, code = int(error.status or 0), error.code
        detail = str(error.detail or error.title or "no detail")
    else:
        return ProviderUnavailableError(f"Twilio call failed: {str(error)[:300]}")
    detail = detail[:300] + (f" (Twilio code {code})" if code else "")
    retry_after = parse_retry_after(header(headers))
    if status == 429:
        return RateLimitedError(f"Twilio rate limit (429): {detail}", retry_after=retry_after)
    if status in AMBIGUOUS_STATUSES:
        return OutcomeUnknownError(f"Twilio's gateway answered {status}, the SMS may have gone out: {detail}")
    if status >= 500 or status in (0, 408):
        return ProviderUnavailableError(f"Twilio error {status}: {detail}", retry_after=retry_after)
    if code in RECIPIENT_ERROR_CODES:
        return RecipientError(f"Twilio cannot send to this number: {detail}")
    return ProviderRejectedError(f"Twilio refused the SMS ({status}): {detail}")
