"""The ``media_assets`` rows the media actors read and update (one short transaction per call)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from actors.media.errors import AssetError
from store.models import MediaAsset
from store.types import utcnow

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def load_asset(engine: Engine, asset_id: int, kind: str) -> MediaAsset:
    """The asset, detached; ``AssetError`` if it does not exist or is not a ``kind``."""
    with Session(engine, expire_on_commit=False) as session:
        asset = session.get(MediaAsset, asset_id)
    if asset is None:
        raise AssetError(f"media asset {asset_id} does not exist")
    if asset.kind != kind:
        raise AssetError(f"media asset {asset_id} is an {asset.kind}, not a {kind}")
    return asset


def mark_processing(engine: Engine, asset_id: int) -> None:
    _update(engine, asset_id, status="processing", error=None)


def mark_ready(
    engine: Engine,
    asset_id: int,
    *,
    renditions: list[dict[str, Any]],
    width: int | None,
    height: int | None,
    duration_s: float | None = None,
) -> None:
    _update(
        engine,
        asset_id,
        status="ready",
        error=None,
        renditions=renditions,
        width=width,
        height=height,
        duration_s=duration_s,
    )


def mark_failed(engine: Engine, asset_id: int, error: str, *, unless_ready: bool = False) -> None:
    """Record the failure (leaving a ``ready`` asset alone if ``unless_ready``); never raises (it
    runs while another error is on its way up)."""
    try:
        _update(engine, asset_id, status="failed", error=error[:MAX_ERROR_CHARS], unless_ready=unless_ready)
    except Exception:
        logger.exception("Could not mark media asset %d as failed.", asset_id)


def note_retry(engine: Engine, asset_id: int, error: str) -> None:
    """Record why an attempt failed that will be retried: the asset stays ``processing``, so
    nobody takes it for lost. Never raises."""
    try:
        _update(engine, asset_id, status="processing", error=error[:MAX_ERROR_CHARS])
    except Exception:
        logger.exception("Could not record the failed attempt on media asset %d.", asset_id)


def _update(engine: Engine, asset_id: int, *, unless_ready: bool = False, **values: Any) -> None:
    statement = update(MediaAsset).where(MediaAsset.id == asset_id).values(**values, updated_at=utcnow())
    if unless_ready:
        statement = statement.where(MediaAsset.status != "ready")
    with engine.begin() as connection:
        connection.execute(statement)
