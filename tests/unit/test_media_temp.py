"""What a worker killed outright leaves behind (work directories, upload temporary files), and the
nightly cleanup that removes it without touching anything in use."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from actors.maintenance import service as maintenance
from actors.media.temp import sweep_stale_workdirs, workdir
from store.db import make_engine
from store.models import Base
from store.storage import TEMP_MARKER, LocalStorage

HOUR = 3600.0


def age(path: Path, seconds: float) -> Path:
    """Make ``path`` (and everything in it) look last modified ``seconds`` ago."""
    then = time.time() - seconds
    for item in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(item, (then, then))
    return path


def abandoned_workdir(parent: Path, name: str, hours: float) -> Path:
    """A work directory as a killed job leaves it: a half-written output inside."""
    path = parent / name
    (path / "out/mp4").mkdir(parents=True)
    (path / "out/mp4/720p.mp4").write_bytes(b"\0" * 1000)
    return age(path, hours * HOUR)


def test_a_job_s_work_directory_is_removed_even_when_the_job_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), workdir(str(tmp_path), "video", 7) as work:
        assert work.parent == tmp_path and work.name.startswith("edujobs-video-7-")
        (work / "partial.mp4").write_bytes(b"x")
        raise RuntimeError("ffmpeg failed")
    assert list(tmp_path.iterdir()) == []


def test_only_media_work_directories_abandoned_long_ago_are_swept(tmp_path: Path) -> None:
    # Given what killed workers left a day ago, a job running now, and others' directories
    abandoned_workdir(tmp_path, "edujobs-video-1-abc", hours=24)
    abandoned_workdir(tmp_path, "edujobs-image-2-def", hours=24)
    running = abandoned_workdir(tmp_path, "edujobs-video-3-ghi", hours=24)
    (running / "out/mp4/360p.mp4").write_bytes(b"being written now")
    abandoned_workdir(tmp_path, "edujobs-backup-xyz", hours=24)
    abandoned_workdir(tmp_path, "someone-elses", hours=24)
    # When the sweep runs with a 12 h threshold
    removed = sweep_stale_workdirs(str(tmp_path), older_than_seconds=12 * HOUR)
    # Then only the abandoned media work directories are gone
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "edujobs-backup-xyz",
        "edujobs-video-3-ghi",
        "someone-elses",
    ]


def test_upload_temporary_files_abandoned_long_ago_are_removed(tmp_path: Path) -> None:
    # Given a stored object, an upload a killed process abandoned, and an upload in progress
    storage = LocalStorage(tmp_path / "storage")
    storage.put_bytes("media/1/video/mp4/720p.mp4", b"done")
    directory = storage.path("media/1/video/mp4")
    abandoned = directory / f".480p.mp4{TEMP_MARKER}0123abcd"
    abandoned.write_bytes(b"half")
    age(abandoned, 24 * HOUR)
    fresh = directory / f".360p.mp4{TEMP_MARKER}4567ef01"
    fresh.write_bytes(b"being written")
    # When the storage sweeps files older than 12 h
    removed = storage.remove_stale_temp_files(older_than_seconds=12 * HOUR)
    # Then only the abandoned one is gone, and the stored object is untouched
    assert removed == 1
    assert sorted(p.name for p in directory.iterdir()) == [fresh.name, "720p.mp4"]
    assert storage.list("media/1/") == ["media/1/video/mp4/720p.mp4"]


def test_the_nightly_cleanup_sweeps_what_killed_workers_left(tmp_path: Path) -> None:
    # Given a media work directory and an upload temporary file, both abandoned two days ago
    engine = make_engine(f"sqlite:///{tmp_path}/edujobs.db")
    Base.metadata.create_all(engine)
    storage = LocalStorage(tmp_path / "storage")
    temp = tmp_path / "media-temp"
    abandoned_workdir(temp, "edujobs-video-9-abc", hours=48)
    part = storage.root / "reports" / f".r.pdf{TEMP_MARKER}89ab"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half a report")
    age(part, 48 * HOUR)
    # When maintenance.run_cleanup runs
    maintenance.run_cleanup(engine, storage, media_temp_dir=str(temp))
    # Then both are gone
    assert list(temp.iterdir()) == [] and not part.exists()
    engine.dispose()
