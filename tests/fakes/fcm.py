"""A fake FCM HTTP v1 API: ``POST /v1/projects/{id}/messages:send`` → 200 with the message's name.

It checks the bearer token and the message's shape; failures are scripted with ``queue(...)`` and
the helpers below, in Google's error format (``error.details[].errorCode`` for FCM's own codes).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from tests.fakes.http import FakeServer, Recorded, Reply

PROJECT_ID = "edujobs-test"
TOKEN = "edujobs-local-fcm"

_ids = itertools.count(1)
_PATH = re.compile(r"^/v1/projects/(?P<project>[a-z0-9-]+)/messages:send$")


def error(status: int, grpc_status: str, message: str, fcm_code: str | None = None) -> Reply:
    details = []
    if fcm_code:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        )
    body = {"error": {"code": status, "message": message, "status": grpc_status, "details": details}}
    return Reply(status, body)


def unregistered() -> Reply:
    return error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")


def invalid_token() -> Reply:
    return error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                 "INVALID_ARGUMENT")  # fmt: skip


def quota_exceeded(retry_after: int = 9) -> Reply:
    reply = error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")
    reply.headers["Retry-After"] = str(retry_after)
    return reply


def unavailable(status: int = 503) -> Reply:
    return error(status, "UNAVAILABLE" if status == 503 else "INTERNAL", "The service is unavailable.",
                 "UNAVAILABLE" if status == 503 else "INTERNAL")  # fmt: skip


def _send(request: Recorded) -> Reply:
    match = _PATH.match(request.path)
    if request.method != "POST" or match is None:
        return error(404, "NOT_FOUND", f"no route {request.method} {request.path}")
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    message = request.json().get("message") or {}
    if not message.get("token"):
        return error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.", "INVALID_ARGUMENT")
    return Reply(200, {"name": f"projects/{match['project']}/messages/{next(_ids)}"})


class FakeFcm(FakeServer):
    def __init__(self) -> None:
        super().__init__(_send)

    def messages(self) -> list[dict[str, Any]]:
        """The ``message`` objects of every send request received (accepted or not), in order."""
        return [r.json()["message"] for r in self.requests if _PATH.match(r.path)]
