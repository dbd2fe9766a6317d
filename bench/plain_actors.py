"""The same no-op benchmark actor on plain Dramatiq: ``dramatiq bench.plain_actors``.

Dramatiq's own RabbitmqBroker with its default middleware and the queue priority edujobs uses
(``x-max-priority`` 9), on the URL in ``BENCH_RABBITMQ_URL``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.noop import ACTOR, MAX_PRIORITY, QUEUE, RABBITMQ_URL_ENV, increment

dramatiq.set_broker(RabbitmqBroker(url=os.environ[RABBITMQ_URL_ENV], max_priority=MAX_PRIORITY))


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
def noop() -> None:
    increment()
