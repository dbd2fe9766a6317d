"""The reports domain: the scheduled monthly reports (compliance audit, system health summary)."""

from actors.reports import actors  # noqa: F401  (declares the actors)
