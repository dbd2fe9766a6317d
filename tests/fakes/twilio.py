"""A fake Twilio REST API: ``POST /2010-04-01/Accounts/{sid}/Messages.json`` → 201 with a message SID.

It checks basic auth (account SID and auth token) and reads the form fields as Twilio does. Errors
are scripted with ``queue(...)`` and the helpers below, in Twilio's own error format.
"""

from __future__ import annotations

import base64
import itertools
import re
import urllib.parse
from typing import Any

from tests.fakes.http import FakeServer, Recorded, Reply

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token"
FROM_NUMBER = "+15005550006"

_ids = itertools.count(1)
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-f]{32})/Messages\.json$")


def form(request: Recorded) -> dict[str, str]:
    """The form fields of a request, one value each."""
    return {k: v[-1] for k, v in urllib.parse.parse_qs(request.body.decode()).items()}


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return Reply(status, {**body, "status": status}, headers or {})


def invalid_number(number: str = "+1555") -> Reply:
    return _error(400, 21211, f"The 'To' number {number} is not a valid phone number.")


def rate_limited(retry_after: int = 7) -> Reply:
    return _error(429, 20429, "Too Many Requests", {"Retry-After": str(retry_after)})


def server_error(status: int = 503) -> Reply:
    return _error(status, 20500, "Service unavailable")


def _messages(request: Recorded) -> Reply:
    match = _PATH.match(request.path)
    if request.method != "POST" or match is None:
        return _error(404, 20404, f"The requested resource {request.path} was not found")
    expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    if request.headers.get("authorization") != expected or match["sid"] != ACCOUNT_SID:
        return _error(401, 20003, "Authenticate")
    fields = form(request)
    if not fields.get("To") or not fields.get("Body") or not fields.get("From"):
        return _error(400, 21604, "A 'To', 'From' and 'Body' parameter is required.")
    sid = f"SM{next(_ids):032x}"
    body: dict[str, Any] = {
        "sid": sid,
        "account_sid": ACCOUNT_SID,
        "to": fields["To"],
        "from": fields["From"],
        "body": fields["Body"],
        "status": "queued",
        "num_segments": "1",
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
    }
    return Reply(201, body)


class FakeTwilio(FakeServer):
    def __init__(self) -> None:
        super().__init__(_messages)

    def messages(self) -> list[dict[str, str]]:
        """The form fields of every Messages request received (accepted or not), in order."""
        return [form(r) for r in self.requests if _PATH.match(r.path)]
