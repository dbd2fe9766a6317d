"""The test process's Dramatiq broker: a StubBroker with edujobs' middleware.

It is set when the root conftest is imported, before any test module is collected: importing a
domain (``actors.media.service`` in an integration test, say) runs ``actors/__init__.py``, whose
``brokers.setup()`` keeps an existing broker, so every actor of the test process is declared on
this stub and never on a RabbitMQ broker of the pytest process (workers run as subprocesses).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from brokers.settings import Settings
from brokers.stack import build_middleware

broker = StubBroker(middleware=build_middleware(Settings(record_job_state=False)))
broker.emit_after("process_boot")
dramatiq.set_broker(broker)
