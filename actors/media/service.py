"""The logic of the media domain, free of dramatiq: videos through ffmpeg, images through Pillow.

Each job works in its own temporary directory (``EDUJOBS_MEDIA_TEMP_DIR`` or the system's), removed
on every way out. Outputs go to storage under keys that depend only on the asset (``media/<id>/
video/...``, ``media/<id>/image/...``): a retried or repeated job overwrites the same objects and then
deletes whatever an earlier run left under its prefix that this run did not write, so outputs are
never duplicated. HLS is uploaded segments first, then variant playlists, then the master playlist,
so a player never sees a playlist naming a missing file. The asset row goes ``processing`` →
``ready`` (with its renditions) or ``failed`` (with the error) when the error is permanent or the
attempt was the message's last; an attempt that will be retried (a transient error, a worker
shutdown) leaves it ``processing``, with the error noted.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from actors.media import assets, images, outputs, runner, transcode
from actors.media.errors import AssetError, InvalidMediaError, ProcessingCancelledError
from actors.media.failures import ffmpeg_failure
from actors.media.probe import PROBE_TIMEOUT_SECONDS, check_video, probe
from actors.media.temp import workdir
from brokers.settings import Settings, get_settings
from contracts.errors import PermanentError
from store.db import get_engine
from store.models import MediaAsset
from store.storage import Storage, get_storage, path_from_file_url

logger = logging.getLogger(__name__)

#: When the caller gives no deadline (tests, scripts): the longest any one job may run.
DEFAULT_TIMEOUT_SECONDS = 6 * 3600

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Media:
    """What the media actors need, built once per worker process."""

    engine: Engine
    storage: Storage
    settings: Settings


@functools.cache
def default_media() -> Media:
    return Media(engine=get_engine(), storage=get_storage(), settings=get_settings())


def video_prefix(asset_id: int) -> str:
    return f"media/{asset_id}/video/"


def image_prefix(asset_id: int) -> str:
    return f"media/{asset_id}/image/"


def _no_progress(percent: float) -> None:
    pass


def fetch_source(media: Media, asset: MediaAsset, directory: Path) -> Path:
    """A local path of the asset's source: read in place when local, else downloaded into ``directory``.

    ``source_uri`` is a key in the configured storage (where uploads land) or a ``file:`` URL.
    """
    uri = asset.source_uri
    if uri.startswith("file:"):
        path = path_from_file_url(uri)
        if not path.is_file():
            raise InvalidMediaError(f"the source of media asset {asset.id} does not exist: {path}")
        return path
    local = media.storage.local_path(uri)
    if local is not None:
        media.storage.size(uri)  # ObjectNotFoundError (permanent) if it is missing
        return local
    target = directory / ("source" + Path(uri).suffix[:10])
    return media.storage.get_file(uri, target)


#: What Dramatiq's interrupts (raised without a message) mean to someone looking at the asset.
_INTERRUPTS = {
    "TimeLimitExceeded": "the job ran past its time limit",
    "Shutdown": "the worker stopped during the job; it is retried",
}


@contextmanager
def _asset_job(engine: Engine, asset_id: int, *, last_attempt: bool) -> Iterator[None]:
    """Record on the asset why the job failed or was interrupted: ``failed`` when no retry follows
    (a permanent error, or the message's last attempt), else still ``processing``."""
    try:
        yield
    except BaseException as e:
        name = type(e).__name__
        reason = f"{name}: {str(e) or _INTERRUPTS.get(name, 'interrupted')}"
        # A shutdown requeues the message without spending a retry (middleware.retries), so even
        # a last attempt runs again.
        final = isinstance(e, PermanentError) or (last_attempt and name != "Shutdown")
        if final:
            assets.mark_failed(engine, asset_id, reason)
        else:
            assets.note_retry(engine, asset_id, reason)
        raise


def _start(engine: Engine, asset_id: int, kind: str) -> MediaAsset:
    """Load the asset and mark it ``processing``; an asset of the other kind is marked failed
    (unless ``ready``: its outputs are still good, only the message was wrong)."""
    try:
        asset = assets.load_asset(engine, asset_id, kind)
    except AssetError as e:
        assets.mark_failed(engine, asset_id, f"{type(e).__name__}: {e}", unless_ready=True)
        raise
    assets.mark_processing(engine, asset_id)
    return asset


def _check_cancelled(should_cancel: Callable[[], bool] | None) -> None:
    if should_cancel is not None and should_cancel():
        raise ProcessingCancelledError("the job was cancelled while it was processing")


def process_video(
    media: Media,
    *,
    asset_id: int,
    renditions: Sequence[str] | None = None,
    hls: bool = True,
    thumbnails: int = 5,
    extract_audio: bool = False,
    deadline: float | None = None,
    progress: Progress = _no_progress,
    should_cancel: Callable[[], bool] | None = None,
    last_attempt: bool = True,
) -> dict[str, Any]:
    """Transcode a video asset: the ladder, HLS, thumbnails and MP3 in one ffmpeg run, then store them.

    ``deadline`` is a ``time.monotonic()`` value past which ffmpeg (or ffprobe) is killed;
    ``should_cancel`` is checked while ffmpeg runs and between the phases; ``last_attempt`` says
    whether a failure is the asset's final word (no retry follows).
    """
    started = time.monotonic()
    deadline = deadline if deadline is not None else started + DEFAULT_TIMEOUT_SECONDS
    settings = media.settings
    asset = _start(media.engine, asset_id, "video")
    with (
        _asset_job(media.engine, asset_id, last_attempt=last_attempt),
        workdir(settings.media_temp_dir, "video", asset_id) as work,
    ):
        progress(1)
        source = fetch_source(media, asset, work)
        info = probe(
            source,
            ffprobe=settings.ffprobe_path,
            timeout=runner.remaining(deadline, cap=PROBE_TIMEOUT_SECONDS),
            name=f"media asset {asset_id}",
        )
        video = check_video(
            info, name=f"media asset {asset_id}", max_duration=settings.media_max_duration_seconds
        )
        assert info.duration is not None  # check_video made sure
        job = transcode.TranscodeJob(
            source=source,
            width=video.width,
            height=video.height,
            duration=info.duration,
            video_index=video.index,
            audio_index=info.audio.index if info.audio else None,
            renditions=transcode.plan_ladder(video.width, video.height, renditions),
            hls=hls,
            thumbnails=thumbnails,
            extract_audio=extract_audio,
        )
        if extract_audio and info.audio is None:
            logger.info("Media asset %d has no audio track: no MP3 made.", asset_id)
        _check_cancelled(should_cancel)
        progress(5)
        out = work / "out"
        for directory in job.directories():
            (out / directory).mkdir(parents=True, exist_ok=True)
        duration = info.duration
        done = run_transcode(
            job,
            settings,
            cwd=out,
            timeout=runner.remaining(deadline),
            progress=lambda seconds: progress(5 + 85 * min(1.0, seconds / duration)),
            should_cancel=should_cancel,
        )
        progress(90)
        _check_cancelled(should_cancel)
        entries, files = outputs.collect(
            job, out, settings, video_prefix(asset_id), media.storage, deadline=deadline
        )
        outputs.check_complete(entries, info.duration, done.stderr)
        _check_cancelled(should_cancel)
        upload(media.storage, out, files, video_prefix(asset_id), progress=lambda f: progress(90 + 9 * f))
        assets.mark_ready(
            media.engine,
            asset_id,
            renditions=entries,
            width=video.width,
            height=video.height,
            duration_s=round(info.duration, 3),
        )
        progress(100)
    summary: dict[str, Any] = {
        "asset_id": asset_id,
        "renditions": [r.name for r in job.renditions],
        "hls": hls,
        "thumbnails": sum(1 for e in entries if e["type"] == "thumbnail"),
        "audio": any(e["type"] == "audio" for e in entries),
        "duration_s": round(info.duration, 3),
        "ffmpeg_s": round(done.elapsed, 3),
    }
    logger.info(
        "Media asset %d: %s in %.1f s.",
        asset_id,
        ", ".join(summary["renditions"]),
        time.monotonic() - started,
    )
    return summary


def run_transcode(
    job: transcode.TranscodeJob,
    settings: Settings,
    *,
    cwd: Path,
    timeout: float,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> runner.Completed:
    """Run the job's one ffmpeg command in ``cwd``; raise a media error if ffmpeg fails."""
    command = transcode.build_command(
        job, ffmpeg_path=settings.ffmpeg_path, preset=settings.ffmpeg_preset, threads=settings.ffmpeg_threads
    )
    done = runner.run(command, cwd=cwd, timeout=timeout, progress=progress, should_cancel=should_cancel)
    if done.returncode != 0:
        raise ffmpeg_failure(done.returncode, done.stderr)
    return done


def upload(
    storage: Storage,
    root: Path,
    names: Sequence[str],
    prefix: str,
    *,
    progress: Callable[[float], None] = _no_progress,
) -> list[str]:
    """Upload ``names`` (relative to ``root``) under ``prefix`` in order, then delete any other key
    under ``prefix`` (left by an earlier run). Return the keys written."""
    keys = []
    for done, name in enumerate(names, start=1):
        keys.append(storage.put_file(prefix + name, root / name).key)
        progress(done / len(names))
    written = set(keys)
    for stale in storage.list(prefix):
        if stale not in written:
            storage.delete(stale)
    return keys


def process_image(
    media: Media,
    *,
    asset_id: int,
    sizes: Sequence[str],
    format: str = "webp",
    watermark: dict[str, Any] | None = None,
    progress: Progress = _no_progress,
    last_attempt: bool = True,
) -> dict[str, Any]:
    """Resize an image asset to ``sizes``, encode as ``format``, watermark if asked, then store them."""
    settings = media.settings
    asset = _start(media.engine, asset_id, "image")
    with (
        _asset_job(media.engine, asset_id, last_attempt=last_attempt),
        workdir(settings.media_temp_dir, "image", asset_id) as work,
    ):
        source_path = fetch_source(media, asset, work)
        name = f"media asset {asset_id}"
        with images.open_image(source_path, max_pixels=settings.media_max_image_pixels, name=name) as source:
            spec = _watermark(media, watermark) if watermark else None
            progress(10)
            encoded = images.render(
                source, list(dict.fromkeys(sizes)), format, watermark=spec, keep_exif=settings.media_keep_exif
            )
            width, height = images.upright_size(source)
        prefix = image_prefix(asset_id)
        entries = []
        for output in encoded:
            key = f"{prefix}{output.size_name}.{output.extension}"
            stored = media.storage.put_bytes(key, output.data)
            entries.append(
                {
                    "type": "image",
                    "name": output.size_name,
                    "format": output.format,
                    "width": output.width,
                    "height": output.height,
                    "key": key,
                    "url": stored.url,
                    "size_bytes": stored.size,
                }
            )
            progress(10 + 85 * len(entries) / len(encoded))
        written = {entry["key"] for entry in entries}
        for stale in media.storage.list(prefix):
            if stale not in written:
                media.storage.delete(stale)
        assets.mark_ready(media.engine, asset_id, renditions=entries, width=width, height=height)
        progress(100)
    return {"asset_id": asset_id, "sizes": [e["name"] for e in entries], "format": format}


def _watermark(media: Media, watermark: dict[str, Any]) -> images.WatermarkSpec:
    logo = None
    if watermark.get("image_key"):
        data = media.storage.get_bytes(str(watermark["image_key"]))
        logo = images.open_image(
            io.BytesIO(data), max_pixels=media.settings.media_max_image_pixels, name="the watermark image"
        )
    return images.WatermarkSpec(
        text=watermark.get("text"),
        image=logo,
        position=str(watermark.get("position", "bottom-right")),
        opacity=float(watermark.get("opacity", 0.5)),
    )
