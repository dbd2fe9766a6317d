"""A fake SendGrid v3 API: ``POST /v3/mail/send`` → 202 with an ``X-Message-Id``."""

from __future__ import annotations

import itertools
from typing import Any

from tests.fakes.http import FakeServer, Recorded, Reply

_ids = itertools.count(1)


def _mail_send(request: Recorded) -> Reply:
    if request.method != "POST" or request.path != "/v3/mail/send":
        return Reply(404, {"errors": [{"message": f"no route {request.method} {request.path}"}]})
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return Reply(401, {"errors": [{"message": "authorization required"}]})
    return Reply(202, None, {"X-Message-Id": f"fake-sg-{next(_ids)}"})


class FakeSendGrid(FakeServer):
    def __init__(self) -> None:
        super().__init__(_mail_send)

    def mails(self) -> list[dict[str, Any]]:
        """The bodies of the mail/send requests that were accepted or not, in order."""
        return [r.json() for r in self.requests if r.path == "/v3/mail/send"]
