"""Bulk email: one template to many users, batched into SendGrid personalizations, rate-limited.

The template is rendered once, with a substitution tag where each recipient's name goes (SendGrid
replaces it per personalization), instead of once per recipient. SendGrid substitutes raw text,
into every part alike, so the HTML part carries its own tag (``-name_html-``) whose value is the
HTML-escaped name: a name such as ``<b>Bo</b> & co`` shows as typed and injects no markup.

The requested user ids are sorted and cut into batches of ``MAX_PERSONALIZATIONS`` *before*
filtering, so a batch always covers the same ids whatever changed in the database since; within a
batch, users without an email address or who opted out of email are left out (and counted).

Each batch is one side effect in the ledger (``<key>:batch:<n>``, channel ``email_bulk``): a retried
or redelivered bulk job sends only the batches SendGrid has not accepted yet. A batch whose outcome
is unknown (the request may have reached SendGrid) is held, never sent again automatically: bulk
is never urgent enough to risk a thousand duplicates (``store.once``). Requests are paced by a token bucket
(``EDUJOBS_SENDGRID_BULK_RATE`` requests per second): in Redis, shared by every worker, when Redis is
configured (``rate_limit``); else this one, shared by the process's threads.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.notifications.providers.sendgrid import MAX_PERSONALIZATIONS, Recipient
from actors.notifications.service import Notifier, deliver_once
from actors.notifications.templates import render_email
from store.models import User

logger = logging.getLogger(__name__)

NAME_TAG = "-name-"
HTML_NAME_TAG = "-name_html-"


class Bucket(Protocol):
    """What paces bulk requests: ``TokenBucket`` here, or ``rate_limit.RedisTokenBucket``."""

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float: ...


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Take one token, sleeping until one is available; return the seconds slept."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait:
            sleep(wait)
        return wait


@dataclass(frozen=True)
class BulkResult:
    batches: int
    sent_batches: int
    recipients: int
    skipped: int

    def summary(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "sent_batches": self.sent_batches,
            "recipients": self.recipients,
            "skipped": self.skipped,
        }


def batches_of(user_ids: Sequence[int]) -> list[list[int]]:
    ids = sorted(set(user_ids))
    return [ids[i : i + MAX_PERSONALIZATIONS] for i in range(0, len(ids), MAX_PERSONALIZATIONS)]


def recipients_of(notifier: Notifier, user_ids: Sequence[int]) -> list[Recipient]:
    with Session(notifier.engine) as session:
        rows = session.execute(
            select(User.email, User.name, User.opted_out).where(User.id.in_(user_ids)).order_by(User.id)
        ).all()
    return [
        Recipient(
            email=email,
            name=name,
            substitutions={NAME_TAG: name or "", HTML_NAME_TAG: html.escape(name or "")},
        )
        for email, name, opted_out in rows
        if email and "email" not in (opted_out or [])
    ]


def send_bulk_email(
    notifier: Notifier,
    bucket: Bucket,
    *,
    user_ids: Sequence[int],
    template: str,
    context: dict[str, Any],
    idempotency_key: str,
    message_id: str,
    actor_name: str = "notifications.send_bulk_email",
    progress: Callable[[float], None] | None = None,
) -> BulkResult:
    """Send ``template`` to every reachable user of ``user_ids``, a batch per request, once per key."""
    rendered = render_email(template, {"name": NAME_TAG, "locale": "en", **context})
    # Jinja leaves the tag as is (nothing in it to escape); in HTML it becomes the escaped one.
    html_part = rendered.html.replace(NAME_TAG, HTML_NAME_TAG)
    batches = batches_of(user_ids)
    sent = recipients = 0
    for index, batch in enumerate(batches):
        people = recipients_of(notifier, batch)
        recipients += len(people)
        if people:
            body = notifier.mailer.bulk_body(
                people,
                subject=rendered.subject,
                text=rendered.text,
                html=html_part,
                categories=(template, "bulk"),
                custom_args={"message_id": message_id, "batch": str(index)},
            )

            def post(body: dict[str, Any] = body) -> str | None:
                return notifier.mailer.post(body)

            result = deliver_once(
                notifier,
                channel="email_bulk",
                user_id=None,
                idempotency_key=f"{idempotency_key}:batch:{index}",
                message_id=message_id,
                actor_name=actor_name,
                send=post,
                # The rate limiter's wait comes before the request may leave: a worker killed
                # while waiting left a claim that is provably unsent (resent at once, not held).
                prepare=bucket.acquire,
            )
            sent += result.status == "sent"
        if progress is not None:
            progress(100 * (index + 1) / len(batches))
    skipped = len(set(user_ids)) - recipients
    logger.info("Bulk email %s: %d batches (%d sent now), %d recipients, %d skipped.",
                idempotency_key, len(batches), sent, recipients, skipped)  # fmt: skip
    return BulkResult(len(batches), sent, recipients, skipped)
