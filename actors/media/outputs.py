"""What one ffmpeg run wrote: checked, described for the asset row, and listed for upload.

``collect`` probes the outputs (all at once: each ffprobe spends most of its ~0.1 s starting up),
measures the HLS variants and writes the master playlist, and returns the asset's renditions
(type, name, dimensions, duration, size, storage key and URL) with the files to upload in a safe
order. ``check_complete`` refuses outputs much shorter than the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from actors.media import runner, transcode
from actors.media.errors import InvalidMediaError
from actors.media.probe import PROBE_TIMEOUT_SECONDS, MediaInfo, ffmpeg_messages, probe
from brokers.settings import Settings
from store.storage import Storage


def check_complete(entries: list[dict[str, Any]], source_duration: float, stderr: str) -> None:
    """Refuse outputs much shorter than the source: ffmpeg exits 0 on a source whose data ends early
    (a truncated upload whose index survived) and writes what it could decode."""
    made = min((e["duration_s"] for e in entries if e["type"] == "video"), default=source_duration)
    if made < source_duration * 0.9 - 0.5:
        problem = ffmpeg_messages(stderr) or "its data ends early"
        raise InvalidMediaError(
            f"the source is damaged: only {made:.1f} s of its {source_duration:.1f} s "
            f"could be decoded ({problem})"
        )


def collect(
    job: transcode.TranscodeJob,
    out: Path,
    settings: Settings,
    prefix: str,
    storage: Storage,
    *,
    deadline: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Describe what ffmpeg wrote (the asset's renditions) and list the files to upload, in order.

    Writes the HLS master playlist. Upload order: MP4s, thumbnails, audio, then for HLS the segments,
    the variant playlists and the master last. The probes are killed at ``deadline`` (the job's,
    ``time.monotonic()``).
    """
    entries: list[dict[str, Any]] = []
    files: list[str] = []
    hls_files: list[str] = []
    variants: list[transcode.Variant] = []
    made_audio = job.makes_audio and (out / "audio/audio.mp3").is_file()
    outputs = [r.mp4 for r in job.renditions] + (["audio/audio.mp3"] if made_audio else [])
    probed = probe_all(
        [out / name for name in outputs],
        ffprobe=settings.ffprobe_path,
        timeout=runner.remaining(deadline, cap=PROBE_TIMEOUT_SECONDS),
    )
    for rendition in job.renditions:
        info = probed[out / rendition.mp4]
        if info.video is None:
            raise InvalidMediaError(f"ffmpeg wrote no video for {rendition.name}")
        entry = {
            "type": "video",
            "name": rendition.name,
            "width": info.video.width,
            "height": info.video.height,
            "duration_s": round(info.duration or 0.0, 3),
            "bitrate": info.bit_rate,
            "video_codec": info.video.codec,
            "audio_codec": info.audio.codec if info.audio else None,
            **_stored(storage, prefix, rendition.mp4, out),
        }
        files.append(rendition.mp4)
        if job.hls:
            playlist = out / rendition.playlist
            peak, average = transcode.measure_variant(playlist)
            hls_files += [f"hls/{rendition.name}/{s.uri}" for s in transcode.read_playlist(playlist)]
            variants.append(
                transcode.Variant(
                    uri=f"{rendition.name}/index.m3u8",
                    width=info.video.width,
                    height=info.video.height,
                    peak_bps=peak,
                    average_bps=average,
                    codecs=transcode.codecs_string(
                        info.video.profile, info.video.level, info.audio is not None
                    ),
                    frame_rate=info.video.fps or None,
                )
            )
            entry["hls_playlist"] = storage.url(prefix + rendition.playlist)
        entries.append(entry)
    thumbnails = sorted(p.relative_to(out).as_posix() for p in (out / "thumbnails").glob("*.jpg"))
    times = transcode.thumbnail_times(job.duration, job.thumbnails) if job.thumbnails else []
    thumb_width, thumb_height = job.thumbnail_size
    for index, name in enumerate(thumbnails):
        entries.append(
            {
                "type": "thumbnail",
                "name": f"thumbnail-{index + 1:02d}",
                "width": thumb_width,
                "height": thumb_height,
                "time_s": times[index] if index < len(times) else None,
                **_stored(storage, prefix, name, out),
            }
        )
        files.append(name)
    if made_audio:
        audio = probed[out / "audio/audio.mp3"]
        entries.append(
            {
                "type": "audio",
                "name": "mp3",
                "duration_s": round(audio.duration or 0.0, 3),
                "bitrate": audio.bit_rate,
                **_stored(storage, prefix, "audio/audio.mp3", out),
            }
        )
        files.append("audio/audio.mp3")
    if job.hls:
        (out / "hls/master.m3u8").write_text(transcode.master_playlist(variants))
        hls_files += [r.playlist for r in job.renditions] + ["hls/master.m3u8"]
        entries.append(
            {
                "type": "hls",
                "name": "master",
                "variants": [r.name for r in job.renditions],
                **_stored(storage, prefix, "hls/master.m3u8", out),
            }
        )
    return entries, files + hls_files


def probe_all(
    paths: Sequence[Path], *, ffprobe: str, timeout: float = PROBE_TIMEOUT_SECONDS
) -> dict[Path, MediaInfo]:
    """Probe several outputs at once (each within ``timeout``): each ffprobe spends ~0.1 s starting
    up, mostly waiting."""
    if len(paths) <= 1:
        return {path: probe(path, ffprobe=ffprobe, timeout=timeout) for path in paths}
    with ThreadPoolExecutor(max_workers=len(paths), thread_name_prefix="ffprobe") as pool:
        found = pool.map(lambda path: probe(path, ffprobe=ffprobe, timeout=timeout), paths)
        return dict(zip(paths, found, strict=True))


def _stored(storage: Storage, prefix: str, name: str, out: Path) -> dict[str, Any]:
    key = prefix + name
    return {"key": key, "url": storage.url(key), "size_bytes": (out / name).stat().st_size}
