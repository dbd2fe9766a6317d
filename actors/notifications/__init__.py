"""Notifications: email (SendGrid), later SMS (Twilio) and push (FCM)."""

from actors.notifications import actors, handlers  # noqa: F401  (declares the actors and event handlers)
