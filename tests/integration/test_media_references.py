"""An upload that names other files is refused by the real ffprobe and ffmpeg: an HLS playlist
saved as ``evil.mp4`` pointing at another asset's ``720p.mp4`` through ``file://`` (left to detect
the format, ffmpeg reads it as that other video and would transcode it into the attacker's asset),
or an ffconcat list. The refusal is permanent and says why; nothing is stored for the attacker's
asset; the other asset's files are untouched. Real media, local storage, SQLite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors.media import service, transcode
from actors.media.errors import InvalidMediaError
from actors.media.failures import ffmpeg_failure
from actors.media.probe import probe
from actors.media.runner import run
from store.storage import LocalStorage
from tests.integration.test_media_video import add_asset, asset_row, engine, media, stored, temp_dir  # noqa: F401
from tests.media_fixtures import ffprobe_json, media_files, naming_other_files

REASONS = {
    "hls": "is an HLS playlist (hls), which makes ffmpeg read the other files it names: refused",
    "concat": "is a concat list (concat), which makes ffmpeg read the other files it names: refused",
}


@pytest.fixture
def victim(media: service.Media) -> Path:  # noqa: F811
    """Another user's video, processed: its 720p rendition is in storage."""
    add_asset(media, media_files().clip("hd"), asset_id=8)
    service.process_video(media, asset_id=8, renditions=["720p"], hls=False, thumbnails=0)
    return stored(media, "media/8/video/mp4/720p.mp4")


def upload_evil(media: service.Media, tmp_path: Path, victim: Path, kind: str) -> Path:  # noqa: F811
    evil = tmp_path / "evil.mp4"
    evil.write_text(naming_other_files(victim, kind))
    add_asset(media, evil, asset_id=9)
    return evil


@pytest.fixture
def evil_hls(media: service.Media, tmp_path: Path, victim: Path) -> Path:  # noqa: F811
    """The HLS playlist an attacker uploads as evil.mp4 (asset 9), naming the victim's 720p."""
    return upload_evil(media, tmp_path, victim, "hls")


def test_the_evil_playlist_is_real_ffprobe_alone_reads_the_other_asset_through_it(evil_hls: Path) -> None:
    # Given the HLS playlist an attacker uploads as evil.mp4
    evil = evil_hls
    # Then ffprobe, left to detect the format, reads the other asset's 720p video through it
    # (what the refusals below guard against is real)
    seen = ffprobe_json(evil)
    assert seen["format"]["format_name"] == "hls"
    assert [(s["width"], s["height"]) for s in seen["streams"] if s["codec_type"] == "video"] == [(1280, 720)]


@pytest.mark.parametrize("kind", REASONS)
def test_an_upload_naming_another_assets_file_is_refused_and_nothing_is_made(
    media: service.Media,  # noqa: F811
    tmp_path: Path,
    victim: Path,
    kind: str,
) -> None:
    # Given an upload that names the other asset's 720p rendition
    upload_evil(media, tmp_path, victim, kind)
    before = victim.read_bytes()
    # When it is processed as a video
    with pytest.raises(InvalidMediaError, match=re.escape(REASONS[kind])):
        service.process_video(media, asset_id=9)
    # Then the asset failed for good with the reason, nothing was stored for it, the victim's file
    # is as it was
    asset = asset_row(media, 9)
    assert asset.status == "failed" and REASONS[kind] in (asset.error or "")
    assert media.storage.list("media/9/") == []
    assert victim.read_bytes() == before


def test_ffmpeg_itself_refuses_the_playlist_even_past_the_probe(tmp_path: Path, evil_hls: Path) -> None:
    # Given the evil playlist, and the transcode command a probe that let it through would run
    job = transcode.TranscodeJob(
        source=evil_hls, width=1280, height=720, duration=2.0, video_index=0, audio_index=None,
        renditions=transcode.plan_ladder(1280, 720, ["240p"]), hls=False, thumbnails=0,
    )  # fmt: skip
    out = tmp_path / "out"
    for directory in job.directories():
        (out / directory).mkdir(parents=True)
    # When ffmpeg runs it
    done = run(transcode.build_command(job, preset="ultrafast"), cwd=out, timeout=60)
    # Then ffmpeg opens nothing, writes nothing, and the failure is permanent with the reason
    assert done.returncode != 0
    assert list(out.rglob("*.mp4")) == []
    failure = ffmpeg_failure(done.returncode, done.stderr)
    assert isinstance(failure, InvalidMediaError) and REASONS["hls"] in str(failure)


def test_the_accepted_formats_still_read_what_the_system_writes(
    media: service.Media,  # noqa: F811
    victim: Path,
) -> None:
    # Given the outputs edujobs wrote for an asset (MP4 and MP3; HLS is written, never read back)
    service.process_video(media, asset_id=8, renditions=["720p", "240p"], hls=True, extract_audio=True)
    storage = media.storage
    assert isinstance(storage, LocalStorage)
    # Then the whitelisted probe reads each of them
    assert probe(storage.path("media/8/video/mp4/240p.mp4")).video is not None
    assert probe(storage.path("media/8/video/audio/audio.mp3")).audio is not None
    assert storage.exists("media/8/video/hls/master.m3u8")
