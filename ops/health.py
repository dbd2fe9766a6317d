"""``edujobs health``: is this edujobs able to work? One check per dependency, each "ok" or what is wrong.

- ``rabbitmq``: the broker accepts a connection;
- ``database``: it answers and is migrated to the latest revision (``edujobs db upgrade`` otherwise);
- ``redis``: it answers (only when ``EDUJOBS_REDIS_URL`` is set);
- ``workers`` (with ``--workers``): every domain queue and event handler queue that is not paused
  has a consumer;
- ``events`` (with ``--workers``): the ``edujobs.events`` exchange exists, every handler is bound to
  its events, and no published event waits unrouted in ``events.unrouted`` (``ops.events``).
"""

from __future__ import annotations

from typing import Any

from brokers.health import check_rabbitmq
from brokers.settings import Settings


def _database(url: str) -> str:
    from sqlalchemy import text

    from store.db import make_engine
    from store.migrate import current, heads

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        at, latest = current(url), heads()
    except Exception as e:
        return f"unreachable ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    finally:
        engine.dispose()
    if at != latest:
        where = ", ".join(at) or "nothing"
        return f"not migrated (at {where}, latest {', '.join(latest)}): run edujobs db upgrade"
    return "ok"


def _redis(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as e:
        return f"unreachable ({type(e).__name__}: {e})"
    return "ok"


def _workers(settings: Settings) -> str:
    from ops.queues import overview
    from store.db import make_engine

    try:
        rows = overview(
            management_url=settings.rabbitmq_management_url,
            rabbitmq_url=settings.rabbitmq_url,
            engine=make_engine(settings.database_url),
        )
    except Exception as e:
        return f"cannot tell ({e})"
    idle = [row["queue"] for row in rows if not row["paused"] and not row["consumers"]]
    if idle:
        return f"no worker consumes {', '.join(idle)}: start one (make worker)"
    return "ok"


def _events(settings: Settings) -> str:
    from ops.events import overview, problem

    try:
        view = overview(management_url=settings.rabbitmq_management_url, rabbitmq_url=settings.rabbitmq_url)
    except Exception as e:
        return f"cannot tell ({e})"
    return problem(view) or "ok"


def checks(settings: Settings, *, workers: bool = False) -> dict[str, Any]:
    """Every check's result, in order; ``healthy`` is True when all are "ok"."""
    result: dict[str, Any] = {
        "rabbitmq": check_rabbitmq(settings.rabbitmq_url, timeout=3.0) or "ok",
        "database": _database(settings.database_url),
    }
    if settings.redis_url:
        result["redis"] = _redis(settings.redis_url)
    if workers:
        result["workers"] = _workers(settings)
        result["events"] = _events(settings)
    result["healthy"] = all(value == "ok" for value in result.values())
    return result
