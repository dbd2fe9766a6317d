"""Test actors for the Sentry end-to-end tests: ``dramatiq tests.e2e.actors_sentry``.

They fail with personal data in their error messages, as a careless provider adapter would, so the
tests can check that Sentry receives one scrubbed event per dead letter. ``testing.record`` (from
``actors_testing``) is the actor that succeeds.
"""

from __future__ import annotations

import dramatiq

from contracts.errors import PermanentError, TransientError
from tests.e2e import actors_testing  # noqa: F401  (sets up the broker; declares testing.record)


@dramatiq.actor(
    queue_name="maintenance",
    actor_name="testing.sentry_unreachable",
    max_retries=2,
    min_backoff=100,
    max_backoff=200,
    time_limit=10_000,
)
def unreachable(student_name: str, email: str, phone: str) -> None:
    raise TransientError(f"could not reach {student_name} at {email} or {phone}")


@dramatiq.actor(queue_name="maintenance", actor_name="testing.sentry_rejected", time_limit=10_000)
def rejected(email: str, api_key: str) -> None:
    raise PermanentError(f"the provider rejected {email} (key {api_key})")
