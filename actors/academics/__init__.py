"""The academics domain: attendance interventions and roll-ups, IEP reminders, grade digests, trends."""

from actors.academics import actors  # noqa: F401  (declares the actors)
