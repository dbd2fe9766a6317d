"""Age limits: Dramatiq's ``AgeLimit``, dead-lettering an expired message with reason ``age_limit``.

Dramatiq's own middleware fails an expired message without saying why, so its dead letter read
``failed`` (or ``retries_exhausted`` after a retry), which sends an operator looking for an
exception that never happened. The limit is the same: the ``max_age`` message option, else the
actor's, else the middleware's, in milliseconds since the message was first enqueued.
"""

from __future__ import annotations

import logging

from dramatiq import Broker, MessageProxy
from dramatiq.common import current_millis
from dramatiq.middleware import AgeLimit as DramatiqAgeLimit

from middleware.fate import reject

logger = logging.getLogger(__name__)


class AgeLimit(DramatiqAgeLimit):
    """Dead-letters (reason ``age_limit``) a message older than its ``max_age`` before it runs."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        max_age = message.options.get("max_age") or actor.options.get("max_age", self.max_age)
        if not max_age:
            return
        age = current_millis() - message.message_timestamp
        if age >= max_age:
            logger.warning("Message %s exceeded its age limit.", message.message_id)
            error = f"the message is {age} ms old, over its max_age of {max_age} ms"
            reject(message, "age_limit", "AgeLimitExceeded", error)
