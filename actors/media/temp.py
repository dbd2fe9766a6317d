"""The media jobs' temporary work directories, and the sweep of those a killed worker left behind.

Each job works in ``edujobs-<kind>-<asset id>-XXXXXXXX`` under ``EDUJOBS_MEDIA_TEMP_DIR`` (or the
system's temporary directory), removed on every way out of the job. A worker killed outright
(SIGKILL, the OOM killer, a lost node) runs no ``finally``, so its directory stays: maintenance's
cleanup calls ``sweep_stale_workdirs`` to remove the ones older than any job can run. This module
imports nothing heavy, so that maintenance can use it without loading ffmpeg-python or Pillow.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

#: The kinds of job that make work directories (``workdir``'s ``kind``).
WORKDIR_KINDS = ("video", "image")


def workdir_parent(temp_dir: str | None) -> Path:
    """Where work directories go: ``EDUJOBS_MEDIA_TEMP_DIR`` when set, else the system's."""
    return Path(temp_dir) if temp_dir else Path(tempfile.gettempdir())


@contextmanager
def workdir(temp_dir: str | None, kind: str, asset_id: int) -> Iterator[Path]:
    """A fresh temporary directory for one job on ``asset_id``, removed afterwards whatever happens."""
    if kind not in WORKDIR_KINDS:
        raise ValueError(f"unknown work directory kind {kind!r}")
    parent = workdir_parent(temp_dir)
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"edujobs-{kind}-{asset_id}-", dir=parent))
    try:
        yield path
    finally:
        try:
            shutil.rmtree(path, ignore_errors=True)
        except BaseException:
            # An asynchronous interrupt (time limit, shutdown) landed mid-removal: each comes once,
            # so finish the job and let it go on up.
            shutil.rmtree(path, ignore_errors=True)
            raise


def sweep_stale_workdirs(
    temp_dir: str | None, *, older_than_seconds: float, now: float | None = None, dry_run: bool = False
) -> int:
    """Remove the media work directories not modified for ``older_than_seconds``; return how many
    (with ``dry_run``, how many would go, removing none).

    Age is the newest modification time of anything in the directory, so a job still writing its
    outputs is never swept, however long ago it started.
    """
    parent = workdir_parent(temp_dir)
    cutoff = (time.time() if now is None else now) - older_than_seconds
    removed = 0
    for kind in WORKDIR_KINDS:
        for path in parent.glob(f"edujobs-{kind}-*"):
            if path.is_symlink() or not path.is_dir():
                continue
            try:
                if _newest_mtime(path) >= cutoff:
                    continue
                if not dry_run:
                    shutil.rmtree(path)
            except FileNotFoundError:
                continue  # its own job removed it meanwhile
            except OSError:
                logger.warning("Could not remove the stale media work directory %s.", path, exc_info=True)
                continue
            removed += 1
    if removed and not dry_run:
        logger.info("Removed %d stale media work directories from %s.", removed, parent)
    return removed


def _newest_mtime(directory: Path) -> float:
    newest = directory.stat().st_mtime
    for path in directory.rglob("*"):
        try:
            newest = max(newest, path.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest
