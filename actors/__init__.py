"""The worker entry point: ``dramatiq actors`` sets up the broker, then declares every domain's actors."""

import brokers

brokers.setup()

from actors import academics, maintenance, media, notifications, reports  # noqa: E402, F401
