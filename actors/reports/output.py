"""Where generated reports go: a file in storage and a ``reports`` row that says where and until when."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from store.models import Report
from store.storage import Storage, content_type_of

#: How long a scheduled report's file is kept (``maintenance.run_cleanup`` deletes it after).
KEEP_DAYS = 400


def params_hash(kind: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, params], sort_keys=True, default=str).encode()).hexdigest()


def save_report(
    engine: Engine,
    storage: Storage,
    *,
    kind: str,
    fmt: str,
    params: dict[str, Any],
    filename: str,
    data: bytes,
    keep_days: int = KEEP_DAYS,
) -> Report:
    """Store ``data`` under ``reports/<kind>/<UTC date>/<filename>`` and record it as a ready report."""
    now = datetime.now(UTC)
    key = f"reports/{kind}/{now:%Y-%m-%d}/{filename}"
    stored = storage.put_bytes(key, data, content_type=content_type_of(key))
    report = Report(
        kind=kind,
        format=fmt,
        params=params,
        params_hash=params_hash(kind, params),
        status="ready",
        storage_uri=stored.url,
        size_bytes=stored.size,
        created_at=now,
        completed_at=now,
        expires_at=now + timedelta(days=keep_days),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(report)
        session.commit()
    return report
