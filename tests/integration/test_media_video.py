"""media.process_video's service on real ffmpeg: the clips the tests generate, local storage, SQLite.

Outputs are checked the way a person would: ffprobe on the MP4s (size, codecs, duration, faststart),
the HLS playlists' structure, the thumbnails' pixels, the asset row, and that no temporary file or
ffmpeg process is left behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from actors.media import service
from actors.media.errors import AssetError, FFmpegFailedError, InvalidMediaError, ProcessingCancelledError
from brokers.settings import Settings
from store.db import make_engine
from store.models import Base, MediaAsset
from store.storage import LocalStorage, ObjectNotFoundError
from tests.media_fixtures import FakeS3, ffmpeg_processes_matching, media_files, streams_of, top_level_boxes


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/edujobs.db")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def media(engine: Engine, tmp_path: Path, temp_dir: Path) -> service.Media:
    settings = Settings(ffmpeg_preset="ultrafast", media_temp_dir=str(temp_dir))
    return service.Media(engine=engine, storage=LocalStorage(tmp_path / "storage"), settings=settings)


def add_asset(media: service.Media, source: Path | str, *, kind: str = "video", asset_id: int = 1) -> int:
    """Upload ``source`` to storage as an upload would, and create its asset row."""
    key = source if isinstance(source, str) else f"uploads/{asset_id}{source.suffix}"
    if isinstance(source, Path):
        media.storage.put_file(key, source)
    with Session(media.engine) as session:
        session.add(MediaAsset(id=asset_id, kind=kind, source_uri=key))
        session.commit()
    return asset_id


def asset_row(media: service.Media, asset_id: int = 1) -> MediaAsset:
    with Session(media.engine) as session:
        asset = session.get(MediaAsset, asset_id)
        assert asset is not None
        session.expunge(asset)
        return asset


def stored(media: service.Media, key: str) -> Path:
    assert isinstance(media.storage, LocalStorage)
    return media.storage.path(key)


def by_type(asset: MediaAsset, kind: str) -> list[dict[str, Any]]:
    return [r for r in asset.renditions if r["type"] == kind]


def test_a_lesson_video_becomes_renditions_hls_and_thumbnails(media: service.Media, temp_dir: Path) -> None:
    # Given a 640x360 lesson video with sound, uploaded
    asset_id = add_asset(media, media_files().clip("landscape"))
    progress: list[float] = []
    # When it is processed
    summary = service.process_video(media, asset_id=asset_id, progress=progress.append)
    # Then the ladder stops at the source's size: 360p and 240p, no upscaled 480p or 720p
    assert summary["renditions"] == ["360p", "240p"]
    asset = asset_row(media)
    assert (asset.status, asset.error, asset.width, asset.height) == ("ready", None, 640, 360)
    assert asset.duration_s == pytest.approx(3.0, abs=0.1)
    videos = {r["name"]: r for r in by_type(asset, "video")}
    for name, (width, height) in {"360p": (640, 360), "240p": (426, 240)}.items():
        path = stored(media, f"media/1/video/mp4/{name}.mp4")
        [video] = streams_of(path, "video")
        [audio] = streams_of(path, "audio")
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", width, height)
        assert (audio["codec_name"], audio["channels"]) == ("aac", 2)
        assert float(video["duration"]) == pytest.approx(3.0, abs=0.2)
        assert top_level_boxes(path).index("moov") < top_level_boxes(path).index("mdat")  # faststart
        # And the asset row describes it, with its size and URL
        assert videos[name]["size_bytes"] == path.stat().st_size
        assert videos[name]["url"] == path.as_uri()
        assert (videos[name]["width"], videos[name]["height"]) == (width, height)
        assert videos[name]["duration_s"] == pytest.approx(3.0, abs=0.2)
    # And HLS: a master playlist naming one variant per rendition, each a complete VOD playlist
    master = stored(media, "media/1/video/hls/master.m3u8").read_text()
    assert re.findall(r"RESOLUTION=(\d+x\d+)", master) == ["640x360", "426x240"]
    assert [line for line in master.splitlines() if not line.startswith("#")] == [
        "360p/index.m3u8",
        "240p/index.m3u8",
    ]
    for name in ("360p", "240p"):
        playlist = stored(media, f"media/1/video/hls/{name}/index.m3u8").read_text()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist and playlist.rstrip().endswith("#EXT-X-ENDLIST")
        segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
        assert segments and all(stored(media, f"media/1/video/hls/{name}/{s}").is_file() for s in segments)
        durations = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", playlist)]
        assert sum(durations) == pytest.approx(3.0, abs=0.2)
    # And five thumbnails at evenly spread times, each a real JPEG of the video's frame
    thumbnails = by_type(asset, "thumbnail")
    assert [t["time_s"] for t in thumbnails] == [0.3, 0.9, 1.5, 2.1, 2.7]
    for thumbnail in thumbnails:
        with Image.open(stored(media, thumbnail["key"])) as image:
            assert (image.format, image.size) == ("JPEG", (640, 360))
    # And progress went up to the end of the work, and nothing is left in the temporary directory
    assert progress == sorted(progress) and progress[0] == 1 and progress[-2:] == [pytest.approx(99), 100]
    assert list(temp_dir.iterdir()) == []


def test_a_portrait_video_keeps_its_orientation(media: service.Media) -> None:
    add_asset(media, media_files().clip("portrait"))
    summary = service.process_video(media, asset_id=1, hls=False, thumbnails=1)
    assert summary["renditions"] == ["360p", "240p"]
    sizes = [
        (v["width"], v["height"]) for v in streams_of(stored(media, "media/1/video/mp4/240p.mp4"), "video")
    ]
    assert sizes == [(240, 426)]
    assert not media.storage.list("media/1/video/hls/")


def test_a_video_without_sound_gives_silent_renditions_and_no_mp3(media: service.Media) -> None:
    add_asset(media, media_files().clip("silent"))
    summary = service.process_video(media, asset_id=1, extract_audio=True, thumbnails=2)
    assert summary["audio"] is False
    path = stored(media, "media/1/video/mp4/240p.mp4")
    assert streams_of(path, "audio") == [] and len(streams_of(path, "video")) == 1
    assert 'CODECS="avc1.' in stored(media, "media/1/video/hls/master.m3u8").read_text()
    assert "mp4a" not in stored(media, "media/1/video/hls/master.m3u8").read_text()
    assert not media.storage.exists("media/1/video/audio/audio.mp3")


def test_the_audio_track_can_be_extracted_as_mp3(media: service.Media) -> None:
    add_asset(media, media_files().clip("small"))
    service.process_video(media, asset_id=1, renditions=["240p"], hls=False, thumbnails=0, extract_audio=True)
    [audio] = streams_of(stored(media, "media/1/video/audio/audio.mp3"), "audio")
    assert audio["codec_name"] == "mp3" and float(audio["duration"]) == pytest.approx(2.0, abs=0.2)
    [entry] = by_type(asset_row(media), "audio")
    assert entry["key"] == "media/1/video/audio/audio.mp3"


BROKEN = {
    "truncated": ("truncated", "moov atom not found; Invalid data found when processing input"),
    "data cut short": ("damaged", "the source is damaged: only "),
    "data all noise": ("garbled", "ffmpeg could not decode the source (exit status 1): "),
    "random bytes": ("random_bytes", "not a media file ffprobe can read"),
    "text renamed .mp4": ("text_file", "not a media file ffprobe can read"),
    "image renamed .mp4": ("still_image", "is an image"),
    "audio only": ("audio_only", "has no video stream (an audio-only file)"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_source_is_a_permanent_error_naming_the_problem(
    media: service.Media, temp_dir: Path, case: str
) -> None:
    # Given an upload that is not a usable video
    maker, problem = BROKEN[case]
    add_asset(media, getattr(media_files(), maker)())
    # When it is processed, Then it fails at once (no retry), saying why
    with pytest.raises(InvalidMediaError, match=re.escape(problem)):
        service.process_video(media, asset_id=1)
    # And the asset says so, nothing was stored, and no temporary file is left
    asset = asset_row(media)
    assert asset.status == "failed" and problem in (asset.error or "")
    assert media.storage.list("media/1/") == []
    assert list(temp_dir.iterdir()) == []


def test_a_video_longer_than_the_limit_is_refused(
    media: service.Media, engine: Engine, tmp_path: Path
) -> None:
    strict = service.Media(engine, media.storage, Settings(media_max_duration_seconds=1))
    add_asset(media, media_files().clip("small"))
    with pytest.raises(InvalidMediaError, match="longer than the 0m01s limit"):
        service.process_video(strict, asset_id=1)
    assert asset_row(media).status == "failed"


def test_a_missing_source_or_asset_is_a_permanent_error(media: service.Media) -> None:
    with pytest.raises(AssetError, match="media asset 9 does not exist"):
        service.process_video(media, asset_id=9)
    add_asset(media, "uploads/never-uploaded.mp4")
    with pytest.raises(ObjectNotFoundError):
        service.process_video(media, asset_id=1)
    assert asset_row(media).status == "failed"
    add_asset(media, media_files().clip("small"), kind="image", asset_id=2)
    with pytest.raises(AssetError, match="is an image, not a video"):
        service.process_video(media, asset_id=2)
    assert asset_row(media, 2).status == "failed"
    assert asset_row(media, 2).error == "AssetError: media asset 2 is an image, not a video"


def test_a_video_job_sent_for_a_ready_image_leaves_the_image_ready(media: service.Media) -> None:
    # Given an image already processed
    add_asset(media, media_files().clip("small"), kind="image")
    with Session(media.engine) as session:
        session.get_one(MediaAsset, 1).status = "ready"
        session.commit()
    # When a video job names it by mistake, Then the job fails, and the image's outputs still stand
    with pytest.raises(AssetError):
        service.process_video(media, asset_id=1)
    assert (asset_row(media).status, asset_row(media).error) == ("ready", None)


def test_ffmpeg_failing_for_the_worker_s_sake_is_retried_and_the_asset_waits(
    media: service.Media, temp_dir: Path
) -> None:
    # Given a good upload, and a worker whose ffmpeg refuses the configured preset (as a build
    # without it would: the setting's validation is bypassed to get there)
    add_asset(media, media_files().clip("small"))
    broken = service.Media(
        media.engine, media.storage, media.settings.model_copy(update={"ffmpeg_preset": "bogus"})
    )
    # When an attempt that will be retried runs, Then ffmpeg's failure is transient
    with pytest.raises(FFmpegFailedError, match="invalid preset 'bogus'"):
        service.process_video(broken, asset_id=1, thumbnails=1, last_attempt=False)
    # And the asset is still processing, saying why the attempt failed, with nothing stored or left
    asset = asset_row(media)
    assert asset.status == "processing" and "Error setting preset" in (asset.error or "")
    assert media.storage.list("media/1/") == [] and list(temp_dir.iterdir()) == []
    # When the retry runs on a sound worker, Then the video is ready
    service.process_video(media, asset_id=1, thumbnails=1)
    assert (asset_row(media).status, asset_row(media).error) == ("ready", None)
    # And had the failing attempt been the last, the asset would have been marked failed
    with pytest.raises(FFmpegFailedError):
        service.process_video(broken, asset_id=1, thumbnails=1, last_attempt=True)
    assert asset_row(media).status == "failed"


def test_processing_again_replaces_the_outputs_without_duplicates(media: service.Media) -> None:
    # Given a video processed once with HLS, thumbnails and MP3
    add_asset(media, media_files().clip("landscape"))
    service.process_video(media, asset_id=1, thumbnails=3, extract_audio=True)
    first = media.storage.list("media/1/")
    # When the job runs again (a retry, a redelivery), Then the very same objects are there
    service.process_video(media, asset_id=1, thumbnails=3, extract_audio=True)
    assert media.storage.list("media/1/") == first
    # When it runs again asking for less, Then what this run did not make is gone
    service.process_video(media, asset_id=1, renditions=["240p"], hls=False, thumbnails=1)
    assert media.storage.list("media/1/") == ["media/1/video/mp4/240p.mp4", "media/1/video/thumbnails/01.jpg"]
    assert [r["name"] for r in asset_row(media).renditions] == ["240p", "thumbnail-01"]
    # And the upload itself was left alone
    assert media.storage.exists("uploads/1.mp4")


def test_a_cancelled_job_stops_ffmpeg_and_stores_nothing(media: service.Media, temp_dir: Path) -> None:
    # Given a long transcode (an HD source, the slowest preset)
    slow = service.Media(
        media.engine, media.storage, Settings(ffmpeg_preset="veryslow", media_temp_dir=str(temp_dir))
    )
    add_asset(media, media_files().clip("hd"))
    # ffmpeg reads the source in place: its path is in ffmpeg's command line (and no other's)
    source = str(stored(media, "uploads/1.mp4"))
    # When the job is cancelled while ffmpeg runs
    with pytest.raises(ProcessingCancelledError):
        service.process_video(slow, asset_id=1, should_cancel=lambda: bool(ffmpeg_processes_matching(source)))
    # Then no ffmpeg reads the source any more, nothing was stored, nothing is left behind, and
    # the asset says why
    assert ffmpeg_processes_matching(source) == []
    assert media.storage.list("media/1/") == [] and list(temp_dir.iterdir()) == []
    assert "cancelled" in (asset_row(media).error or "")


def test_a_job_cancelled_while_ffmpeg_finishes_uploads_nothing(media: service.Media, temp_dir: Path) -> None:
    # Given a quick transcode, cancelled once ffmpeg has written everything
    add_asset(media, media_files().clip("small"))
    progress: list[float] = []
    # When it runs, Then it stops before the upload
    with pytest.raises(ProcessingCancelledError):
        service.process_video(
            media, asset_id=1, progress=progress.append, should_cancel=lambda: max(progress) >= 90
        )
    assert media.storage.list("media/1/") == [] and list(temp_dir.iterdir()) == []
    assert asset_row(media).status == "failed" and "cancelled" in (asset_row(media).error or "")


def test_a_video_in_s3_is_processed_into_s3(engine: Engine, temp_dir: Path) -> None:
    fake = FakeS3().start()
    try:
        storage = fake.storage(fake.create_bucket(), prefix="edujobs")
        media = service.Media(
            engine, storage, Settings(ffmpeg_preset="ultrafast", media_temp_dir=str(temp_dir))
        )
        add_asset(media, media_files().clip("small"))
        service.process_video(media, asset_id=1, thumbnails=1)
        assert storage.list("media/1/video/") == [
            "media/1/video/hls/240p/index.m3u8",
            "media/1/video/hls/240p/segment_00000.ts",
            "media/1/video/hls/master.m3u8",
            "media/1/video/mp4/240p.mp4",
            "media/1/video/thumbnails/01.jpg",
        ]
        assert storage.get_bytes("media/1/video/hls/master.m3u8").startswith(b"#EXTM3U")
        assert list(temp_dir.iterdir()) == []
    finally:
        fake.stop()
