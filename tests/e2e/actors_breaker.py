"""Test actors for the circuit breaker end-to-end tests: ``dramatiq tests.e2e.actors_breaker``.

Each posts to a fake provider (``EDUJOBS_TEST_PROVIDER_URL``) through the ``sendgrid`` breaker's
guard, the way a provider adapter does, and says in the request which attempt it is (its retries and
breaker delays) so the test can see how the message got there.
"""

from __future__ import annotations

import os

import dramatiq
import httpx
from dramatiq.middleware import CurrentMessage

import actors  # noqa: F401  (sets up the broker from the environment and declares the real actors)
from contracts.errors import ProviderRejectedError, ProviderUnavailableError
from middleware.breaker_storage import guard

PROVIDER_URL = os.environ.get("EDUJOBS_TEST_PROVIDER_URL", "http://127.0.0.1:9")


def post(name: str) -> None:
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    body = {
        "name": name,
        "retries": options.get("retries", 0),
        "circuit_delays": options.get("circuit_delays", 0),
    }
    with guard("sendgrid"):
        try:
            response = httpx.post(f"{PROVIDER_URL}/send", json=body, timeout=5)
        except httpx.HTTPError as e:
            raise ProviderUnavailableError(f"provider unreachable: {e}") from None
        if response.status_code >= 500:
            raise ProviderUnavailableError(f"provider answered {response.status_code}")
        if response.status_code >= 400:
            raise ProviderRejectedError(f"provider refused the request ({response.status_code})")


@dramatiq.actor(
    queue_name="notifications",
    actor_name="breaker_testing.send",
    max_retries=3,
    min_backoff=60_000,
    max_backoff=60_000,
    time_limit=10_000,
)
def send(name: str) -> None:
    post(name)


@dramatiq.actor(
    queue_name="notifications", actor_name="breaker_testing.send_once", max_retries=0, time_limit=10_000
)
def send_once(name: str) -> None:
    post(name)


@dramatiq.actor(
    queue_name="notifications",
    actor_name="breaker_testing.send_declared",
    max_retries=0,
    time_limit=10_000,
    circuit_breaker="sendgrid",
)
def send_declared(name: str) -> None:
    post(name)
