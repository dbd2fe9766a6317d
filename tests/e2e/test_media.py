"""End to end: media jobs sent by a service, run by a `dramatiq actors -Q media --threads 1` worker.

The worker stores outputs in a directory of this test (``EDUJOBS_STORAGE_URL=file:...``) and works
in a temporary directory of this test (``EDUJOBS_MEDIA_TEMP_DIR``). ffmpeg reads the upload in
place, so the test's directory is in every ffmpeg command line: looking for it finds the test's
ffmpeg processes and no one else's.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.jobs import JobStore
from store.migrate import upgrade
from store.models import MediaAsset
from tests.amqp import dramatiq_message, publish, take
from tests.media_fixtures import ffmpeg_processes_matching, media_files, streams_of
from tests.worker import WorkerProcess

KEY = b"test-signing-key"


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    upgrade(edujobs_env["EDUJOBS_DATABASE_URL"])
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture
def media_env(edujobs_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **edujobs_env,
        "EDUJOBS_STORAGE_URL": f"file:{tmp_path}/storage",
        "EDUJOBS_MEDIA_TEMP_DIR": str(tmp_path / "work"),
        "EDUJOBS_FFMPEG_PRESET": "ultrafast",
        "EDUJOBS_FFMPEG_THREADS": "1",
    }


def start_worker(env: dict[str, str]) -> WorkerProcess:
    # The documented deployment of a media pool: its own queue, one thread
    return WorkerProcess(env, threads=1, queues=("media",)).wait_ready()


def add_asset(
    engine: Engine, tmp_path: Path, source: Path, *, kind: str = "video", asset_id: int = 1
) -> None:
    key = f"uploads/{asset_id}{source.suffix}"
    target = tmp_path / "storage" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with Session(engine) as session:
        session.add(MediaAsset(id=asset_id, kind=kind, source_uri=key))
        session.commit()


def asset_row(engine: Engine, asset_id: int = 1) -> MediaAsset:
    with Session(engine, expire_on_commit=False) as session:
        asset = session.get(MediaAsset, asset_id)
    assert asset is not None
    return asset


def wait_until(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_lesson_video_and_a_cover_image_sent_by_a_service_are_processed(
    media_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    # Given a media worker, an uploaded lesson video and an uploaded cover image
    add_asset(engine, tmp_path, media_files().clip("landscape"))
    cover = tmp_path / "cover.png"
    Image.new("RGB", (1200, 900), "navy").save(cover)
    add_asset(engine, tmp_path, cover, kind="image", asset_id=2)
    worker = start_worker(media_env)
    client = Client(media_env["EDUJOBS_RABBITMQ_URL"], signing_key=KEY)
    try:
        # When the platform asks for them to be processed
        video_job = client.send(
            "media.process_video", {"asset_id": 1, "thumbnails": 3, "extract_audio": True}
        )
        client.send(
            "media.process_image", {"asset_id": 2, "sizes": ["thumbnail", "medium"], "format": "jpeg"}
        )
        wait_until(lambda: asset_row(engine, 1).status in ("ready", "failed"))
        wait_until(lambda: asset_row(engine, 2).status in ("ready", "failed"))
    finally:
        client.close()
        worker.stop()
    # Then the video's renditions, HLS, thumbnails and MP3 are in storage, and its row lists them
    video = asset_row(engine, 1)
    assert (video.status, video.error, video.width, video.height) == ("ready", None, 640, 360)
    storage = tmp_path / "storage/media/1/video"
    assert sorted(p.relative_to(storage).as_posix() for p in storage.rglob("*") if p.is_file()) == [
        "audio/audio.mp3",
        "hls/240p/index.m3u8",
        "hls/240p/segment_00000.ts",
        "hls/360p/index.m3u8",
        "hls/360p/segment_00000.ts",
        "hls/master.m3u8",
        "mp4/240p.mp4",
        "mp4/360p.mp4",
        "thumbnails/01.jpg",
        "thumbnails/02.jpg",
        "thumbnails/03.jpg",
    ]
    [stream] = streams_of(storage / "mp4/360p.mp4", "video")
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    assert {r["type"] for r in video.renditions} == {"video", "hls", "thumbnail", "audio"}
    assert all(r["url"].startswith("file://") for r in video.renditions)
    # And the job's progress reached 100 in job state
    job = JobStore(engine).get(video_job)
    assert job is not None and job.progress == 100
    # And the image's sizes too
    image = asset_row(engine, 2)
    assert image.status == "ready"
    assert [(r["name"], r["width"], r["height"]) for r in image.renditions] == [
        ("thumbnail", 150, 150),
        ("medium", 800, 600),
    ]
    # And the worker left no temporary file
    assert list((tmp_path / "work").iterdir()) == []


def slow_transcode(media_env: dict[str, str], engine: Engine, tmp_path: Path) -> dict[str, str]:
    """An HD upload, and a worker environment in which transcoding it takes far longer than seconds."""
    add_asset(engine, tmp_path, media_files().clip("hd"))
    return {**media_env, "EDUJOBS_FFMPEG_PRESET": "veryslow"}


def test_a_job_past_its_time_limit_leaves_no_ffmpeg_and_no_temporary_files(
    media_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    # Given a transcode that takes far longer than its 2 s time limit
    worker = start_worker(slow_transcode(media_env, engine, tmp_path))
    message = dramatiq_message(
        "media.process_video",
        "media",
        {"asset_id": 1},
        key=KEY,
        options={"time_limit": 2000, "max_retries": 0},
    )
    try:
        # When it runs
        publish(media_env["EDUJOBS_RABBITMQ_URL"], "media", message)
        wait_until(lambda: ffmpeg_processes_matching(str(tmp_path)), timeout=30)
        # Then it is interrupted at its limit and dead-lettered as a timeout
        [dead] = take(media_env["EDUJOBS_RABBITMQ_URL"], "media.XQ", 1, timeout=30)
        assert dead.headers["x-edujobs-exception"] in ("TimeLimitExceeded", "FFmpegTimeoutError")
        # And no ffmpeg is left running, nor any temporary file, nor any half output
        assert ffmpeg_processes_matching(str(tmp_path)) == []
        assert list((tmp_path / "work").iterdir()) == []
        assert not (tmp_path / "storage/media").exists()
        wait_until(lambda: asset_row(engine).status == "failed", timeout=10)
        assert "time limit" in (asset_row(engine).error or "") or "deadline" in (
            asset_row(engine).error or ""
        )
    finally:
        worker.stop()


def test_a_worker_stopped_mid_transcode_kills_ffmpeg_and_cleans_up(
    media_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    # Given a worker busy with a long transcode
    worker = start_worker(slow_transcode(media_env, engine, tmp_path))
    client = Client(media_env["EDUJOBS_RABBITMQ_URL"], signing_key=KEY)
    try:
        client.send("media.process_video", {"asset_id": 1})
        wait_until(lambda: ffmpeg_processes_matching(str(tmp_path)), timeout=30)
    finally:
        client.close()
        # When the worker is told to stop (a deploy, a scale-down)
        worker.stop()
    # Then ffmpeg was killed with it, and its temporary files removed
    assert ffmpeg_processes_matching(str(tmp_path)) == []
    assert list((tmp_path / "work").iterdir()) == []
    # And the asset still waits for the retry the shutdown requeued, saying why it was interrupted
    asset = asset_row(engine)
    assert (asset.status, asset.error) == (
        "processing",
        "Shutdown: the worker stopped during the job; it is retried",
    )
