"""Media files left by deleted assets: found in storage and removed (``maintenance.clean_orphan_media``).

Every file the media actors write is under ``media/<asset id>/`` (renditions, HLS, thumbnails,
audio, image sizes: ``actors.media.service``), and so is a source uploaded there. A file under the
prefix of an id that has no ``media_assets`` row any more belongs to nobody: deleting an asset row
leaves its files behind, and so does a job still writing when its asset was deleted. Such a file is
removed once it is older than the grace period (``grace_hours``, 24 by default): a younger one may be
an upload or a job's output still being written for an asset whose row is not committed yet.
Keys under ``media/`` that name no asset id (``media/uploads/...``) and everything outside
``media/`` are left alone.

The listing is streamed (``Storage.scan``) and the asset ids looked up a page of keys at a time, so
a run's memory does not grow with the store.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from store.models import MediaAsset
from store.storage import ObjectInfo, Storage

logger = logging.getLogger(__name__)

PREFIX = "media/"
#: Objects examined per look-up of their asset ids.
PAGE = 1000
_ASSET_KEY = re.compile(r"^media/(\d{1,18})/")


@dataclass
class OrphanMedia:
    """What one run removed (or, dry, would remove) and what it left."""

    dry_run: bool
    grace_hours: float
    files: int = 0
    bytes: int = 0
    kept_young: int = 0  # orphaned files younger than the grace period, left for the next run
    kept_young_bytes: int = 0
    unrecognized: int = 0  # keys under media/ that name no asset id, left alone
    assets: int = 0  # deleted assets whose files were removed

    def summary(self) -> dict[str, float | int | bool]:
        return dict(self.__dict__)


def clean_orphan_media(
    engine: Engine,
    storage: Storage,
    *,
    grace_hours: float = 24.0,
    dry_run: bool = False,
    now: float | None = None,
) -> OrphanMedia:
    """Remove the files under ``media/<id>/`` whose asset no longer exists and that are older than
    ``grace_hours`` (wall-clock, the storage's modification times); with ``dry_run``, count them
    and remove nothing."""
    cutoff = (time.time() if now is None else now) - grace_hours * 3600
    result = OrphanMedia(dry_run=dry_run, grace_hours=grace_hours)
    orphaned_assets: set[int] = set()
    page: list[tuple[int, ObjectInfo]] = []
    for info in storage.scan(PREFIX):
        match = _ASSET_KEY.match(info.key)
        if match is None:
            result.unrecognized += 1
            continue
        page.append((int(match.group(1)), info))
        if len(page) >= PAGE:
            _sweep(engine, storage, page, cutoff, result, orphaned_assets)
            page = []
    if page:
        _sweep(engine, storage, page, cutoff, result, orphaned_assets)
    result.assets = len(orphaned_assets)
    if result.files and not dry_run:
        logger.info(
            "Removed %d media files (%d bytes) of %d deleted assets; %d younger than %s h left.",
            result.files,
            result.bytes,
            result.assets,
            result.kept_young,
            grace_hours,
        )
    return result


def _sweep(
    engine: Engine,
    storage: Storage,
    page: list[tuple[int, ObjectInfo]],
    cutoff: float,
    result: OrphanMedia,
    orphaned_assets: set[int],
) -> None:
    existing = _existing_assets(engine, {asset_id for asset_id, _ in page})
    for asset_id, info in page:
        if asset_id in existing:
            continue
        if info.modified >= cutoff:
            result.kept_young += 1
            result.kept_young_bytes += info.size
            continue
        if not result.dry_run:
            storage.delete(info.key)
        result.files += 1
        result.bytes += info.size
        orphaned_assets.add(asset_id)


def _existing_assets(engine: Engine, ids: Iterable[int]) -> set[int]:
    with engine.connect() as connection:
        return set(connection.scalars(select(MediaAsset.id).where(MediaAsset.id.in_(sorted(ids)))))
