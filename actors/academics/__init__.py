"""The academics domain: attendance interventions and roll-ups, IEP reminders, grade digests, trends,
and the handlers of ``grade.updated`` and ``attendance.marked``."""

from actors.academics import actors, handlers  # noqa: F401  (declares the actors and event handlers)
