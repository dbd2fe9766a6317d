"""The maintenance actors: thin wrappers over ``actors.maintenance.service``."""

from __future__ import annotations

from typing import Any

from actors.base import actor
from actors.maintenance import dead_letters, service


def _engine_and_storage() -> tuple[Any, Any]:
    from store.db import get_engine
    from store.storage import get_storage

    return get_engine(), get_storage()


@actor("maintenance.run_cleanup", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def run_cleanup(
    job_days: int = 30, delivery_days: int = 90, event_days: int = 30, fire_days: int = 180
) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    return service.run_cleanup(
        engine,
        storage,
        job_days=job_days,
        delivery_days=delivery_days,
        event_days=event_days,
        fire_days=fire_days,
    )


@actor("maintenance.backup_database", time_limit=3_600_000, max_retries=3, max_backoff=1_800_000)
def backup_database(keep_days: int = 30) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    return service.backup_database(engine, storage, keep_days=keep_days)


@actor("maintenance.archive_old_data", time_limit=7_200_000, max_retries=3, max_backoff=1_800_000)
def archive_old_data(days: int = 365, batch_size: int = 5000) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    result = service.archive_old_data(engine, storage, days=days, batch_size=batch_size)
    return {key: value for key, value in result.items() if key != "files"} | {"files": len(result["files"])}


@actor("maintenance.archive_dead_letters", time_limit=3_600_000, max_retries=3, max_backoff=1_800_000)
def archive_dead_letters(queues: list[str] | None = None) -> dict[str, Any]:
    from brokers.settings import get_settings
    from brokers.topology import ALL_QUEUES
    from store.storage import get_storage

    settings = get_settings()
    return dead_letters.archive_dead_letters(
        settings.rabbitmq_url,
        get_storage(),
        ttl_ms=settings.dead_letter_ttl_ms,
        margin_ms=int(settings.dead_letter_archive_margin_days * 86_400_000),
        queues=tuple(queues or ALL_QUEUES),
    )
