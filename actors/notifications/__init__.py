"""Notifications: email (SendGrid), later SMS (Twilio) and push (FCM)."""

from actors.notifications import actors  # noqa: F401  (declares the actors)
