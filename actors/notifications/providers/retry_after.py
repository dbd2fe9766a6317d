"""The ``Retry-After`` header, in both of its forms (RFC 9110 §10.2.3): delay-seconds or HTTP-date."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime


def parse_retry_after(
    value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """Seconds to wait, from ``Retry-After: 120`` or ``Retry-After: Wed, 21 Oct 2026 07:28:00 GMT``;
    None when absent or unreadable (the caller's own backoff applies). A date in the past is 0."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def header(headers: object, name: str = "Retry-After") -> str | None:
    """A header's value from a mapping of any case, or None."""
    if headers is None or not hasattr(headers, "items"):
        return None
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            return str(value)
    return None
