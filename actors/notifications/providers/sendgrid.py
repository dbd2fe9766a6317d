"""SendGrid adapter: the real ``sendgrid`` client, with a timeout, its errors translated.

429, 500, 503, a refused connection and a connect timeout become ``TransientError`` subclasses (429
and 503 carry the provider's Retry-After, in seconds or as an HTTP date); other 4xx become
``ProviderRejectedError`` (permanent). A failure after the request may have reached SendGrid (the
connection reset or closed while waiting for the answer, a read timeout, a gateway's 502 or 504)
is ``OutcomeUnknownError``: SendGrid may have accepted the email, so the ledger applies its
unknown-outcome policy (``store.once``) instead of letting the retry send a second copy.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from python_http_client.client import Response
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from actors.notifications.providers.outcome import AMBIGUOUS_STATUSES, urllib_request_left
from actors.notifications.providers.retry_after import header, parse_retry_after
from actors.notifications.providers.transport import build_opener
from contracts.errors import ProviderRejectedError, ProviderUnavailableError, RateLimitedError
from middleware.breaker_storage import guard
from store.once import OutcomeUnknownError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    html: str
    text: str
    to_name: str | None = None
    categories: Sequence[str] = ()
    custom_args: Mapping[str, str] = field(default_factory=dict)
    attachments: Sequence[Attachment] = ()


#: SendGrid's limit of personalizations (recipients, here) in one mail/send request.
MAX_PERSONALIZATIONS = 1000


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str | None = None
    substitutions: Mapping[str, str] = field(default_factory=dict)


class SendGridMailer:
    """Sends emails through SendGrid's v3 mail/send endpoint."""

    def __init__(
        self, *, api_key: str, host: str, timeout: float, from_email: str, from_name: str | None = None
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        self.client.client.timeout = timeout
        # SendGrid's documented ``client.mail.send.post(...)``, its path built once: each attribute
        # of that chain builds a new python_http_client.Client, twice per email otherwise.
        self._mail_send = self.client.client.mail.send
        # Its ``post`` also builds a urllib opener per request (``urllib.request.build_opener()``:
        # ten handler objects, and the proxy handler reads the whole environment), which was about
        # 15 % of what a busy worker spent holding the GIL per email. ``_post`` hands the SDK's own
        # ``_make_request`` the same request (its URL, its headers, the JSON body) through one
        # opener built here, with the same default handlers: proxies are read once, at start.
        # Its connections mark the ledger's claim "sending" once connected (``transport``).
        self._opener = build_opener()
        self._url = self._mail_send._build_url(None)
        self._headers = {**self._mail_send.request_headers, "Content-Type": "application/json"}
        self.from_email = from_email
        self.from_name = from_name

    def body(self, email: Email) -> dict[str, Any]:
        """The request body of ``POST /v3/mail/send`` for one email."""
        to: dict[str, str] = {"email": email.to}
        if email.to_name:
            to["name"] = email.to_name
        sender: dict[str, str] = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        body: dict[str, Any] = {
            "personalizations": [{"to": [to]}],
            "from": sender,
            "subject": email.subject,
            "content": [
                {"type": "text/plain", "value": email.text},
                {"type": "text/html", "value": email.html},
            ],
        }
        if email.categories:
            body["categories"] = list(email.categories)[:10]
        if email.custom_args:
            body["custom_args"] = {k: str(v) for k, v in email.custom_args.items()}
        if email.attachments:
            body["attachments"] = [
                {
                    "content": base64.b64encode(a.content).decode(),
                    "filename": a.filename,
                    "type": a.mime_type,
                    "disposition": "attachment",
                }
                for a in email.attachments
            ]
        return body

    def bulk_body(
        self,
        recipients: Sequence[Recipient],
        *,
        subject: str,
        text: str,
        html: str,
        categories: Sequence[str] = (),
        custom_args: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One ``POST /v3/mail/send`` body for up to ``MAX_PERSONALIZATIONS`` recipients: one
        personalization each (nobody sees the others' addresses), with its own substitutions."""
        if not 0 < len(recipients) <= MAX_PERSONALIZATIONS:
            raise ValueError(
                f"a bulk request takes 1 to {MAX_PERSONALIZATIONS} recipients, not {len(recipients)}"
            )
        template = self.body(Email(to=recipients[0].email, subject=subject, html=html, text=text,
                                   categories=categories, custom_args=custom_args or {}))  # fmt: skip
        personalizations = []
        for recipient in recipients:
            to: dict[str, str] = {"email": recipient.email}
            if recipient.name:
                to["name"] = recipient.name
            personalization: dict[str, Any] = {"to": [to]}
            if recipient.substitutions:
                personalization["substitutions"] = dict(recipient.substitutions)
            personalizations.append(personalization)
        template["personalizations"] = personalizations
        return template

    def send(self, email: Email) -> str | None:
        """Send one email; return SendGrid's message id (``X-Message-Id``) when it gives one."""
        return self.post(self.body(email))

    def post(self, body: dict[str, Any]) -> str | None:
        # The guard counts 5xx, timeouts and connection errors against SendGrid's circuit breaker
        # and refuses the call (CircuitOpenError) while it is open.
        with guard("sendgrid"):
            return self._post(body)

    def _post(self, body: dict[str, Any]) -> str | None:
        try:
            request = urllib.request.Request(
                self._url, data=json.dumps(body).encode(), headers=self._headers, method="POST"
            )
            response = Response(self._mail_send._make_request(self._opener, request))
        except HTTPError as e:
            raise translate_http_error(e) from None
        except (OSError, http.client.HTTPException) as e:
            # Connecting and sending fail as URLError (nothing was sent); reading the answer fails
            # unwrapped (a timeout, a reset, RemoteDisconnected): the request went out.
            if not urllib_request_left(e):
                raise ProviderUnavailableError(f"SendGrid unreachable: {e}") from None
            if isinstance(e, TimeoutError):
                raise OutcomeUnknownError(f"SendGrid did not answer in time: {e}") from None
            raise OutcomeUnknownError(f"the connection to SendGrid broke before its answer: {e!r}") from None
        headers = getattr(response, "headers", None) or {}
        message_id = headers.get("X-Message-Id") if hasattr(headers, "get") else None
        return str(message_id) if message_id else None


def translate_http_error(error: HTTPError) -> Exception:
    status = int(getattr(error, "status_code", 0) or 0)
    detail = _error_detail(error)
    retry_after = parse_retry_after(header(getattr(error, "headers", None)))
    if status == 429:
        return RateLimitedError(f"SendGrid rate limit (429): {detail}", retry_after=retry_after)
    if status in AMBIGUOUS_STATUSES:
        return OutcomeUnknownError(
            f"SendGrid's gateway answered {status}, the email may have gone out: {detail}"
        )
    if status >= 500 or status in (0, 408):
        return ProviderUnavailableError(f"SendGrid error {status}: {detail}", retry_after=retry_after)
    return ProviderRejectedError(f"SendGrid refused the email ({status}): {detail}")


def _error_detail(error: HTTPError) -> str:
    try:
        errors = error.to_dict.get("errors") or []
        messages = [str(item.get("message", "")) for item in errors if isinstance(item, dict)]
        if messages:
            return "; ".join(messages)[:500]
    except Exception:
        pass
    return str(getattr(error, "reason", "") or "no detail")
