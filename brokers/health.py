"""Broker health checks used by ``edujobs check`` and ``make run``."""

from __future__ import annotations

import pika
import pika.exceptions


def check_rabbitmq(url: str, timeout: float = 3.0) -> str | None:
    """Return ``None`` when RabbitMQ answers at ``url``, else what is wrong and how to fix it."""
    parameters = pika.URLParameters(url.split(";")[0])
    parameters.socket_timeout = timeout
    parameters.blocked_connection_timeout = timeout
    parameters.connection_attempts = 1
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.ProbableAuthenticationError:
        return (
            f"RabbitMQ at {parameters.host}:{parameters.port} refused the credentials in EDUJOBS_RABBITMQ_URL"
        )
    except pika.exceptions.AMQPError as e:
        return (
            f"RabbitMQ does not answer at {parameters.host}:{parameters.port} ({type(e).__name__}). "
            "Start it with `rabbitmq-server -detached`, or point EDUJOBS_RABBITMQ_URL at a running server."
        )
    connection.close()
    return None
