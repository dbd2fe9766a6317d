"""The maintenance actors: thin wrappers over ``actors.maintenance.service`` and its neighbours.

Every one that deletes or moves something takes ``dry_run``: it then reports what it would remove
or archive, in the same counts as a real run, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from actors.base import actor
from actors.maintenance import dead_letters, orphan_media, service


def _engine_and_storage() -> tuple[Any, Any]:
    from store.db import get_engine
    from store.storage import get_storage

    return get_engine(), get_storage()


@actor("maintenance.run_cleanup", time_limit=1_800_000, max_retries=3, max_backoff=600_000)
def run_cleanup(
    job_days: int = 30,
    delivery_days: int = 90,
    event_days: int = 30,
    fire_days: int = 180,
    processed_event_days: int = 90,
    dry_run: bool = False,
) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    counts = service.run_cleanup(
        engine,
        storage,
        job_days=job_days,
        delivery_days=delivery_days,
        event_days=event_days,
        fire_days=fire_days,
        processed_event_days=processed_event_days,
        dry_run=dry_run,
    )
    return {**counts, "dry_run": dry_run}


@actor("maintenance.backup_database", time_limit=3_600_000, max_retries=3, max_backoff=1_800_000)
def backup_database(keep_days: int = 30, dry_run: bool = False) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    return service.backup_database(engine, storage, keep_days=keep_days, dry_run=dry_run) | {
        "dry_run": dry_run
    }


@actor("maintenance.archive_old_data", time_limit=7_200_000, max_retries=3, max_backoff=1_800_000)
def archive_old_data(days: int = 365, batch_size: int = 5000, dry_run: bool = False) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    result = service.archive_old_data(engine, storage, days=days, batch_size=batch_size, dry_run=dry_run)
    files = len(result["files"])
    return {key: value for key, value in result.items() if key != "files"} | {
        "files": files,
        "dry_run": dry_run,
    }


@actor("maintenance.archive_dead_letters", time_limit=3_600_000, max_retries=3, max_backoff=1_800_000)
def archive_dead_letters(queues: list[str] | None = None, dry_run: bool = False) -> dict[str, Any]:
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
        dry_run=dry_run,
    )


@actor("maintenance.archive_audit_logs", time_limit=7_200_000, max_retries=3, max_backoff=1_800_000)
def archive_audit_logs(
    retention_days: int | None = None, batch_size: int = 5000, dry_run: bool = False
) -> dict[str, Any]:
    from brokers.settings import get_settings
    from store import audit_archive

    engine, storage = _engine_and_storage()
    days = retention_days or get_settings().audit_retention_days
    result = audit_archive.archive_audit_logs(
        engine, storage, retention_days=days, batch_size=batch_size, dry_run=dry_run
    )
    return result.summary() | {"retention_days": days}


@actor("maintenance.clean_orphan_media", time_limit=3_600_000, max_retries=3, max_backoff=600_000)
def clean_orphan_media(grace_hours: float = 24.0, dry_run: bool = False) -> dict[str, Any]:
    engine, storage = _engine_and_storage()
    return orphan_media.clean_orphan_media(
        engine, storage, grace_hours=grace_hours, dry_run=dry_run
    ).summary()
