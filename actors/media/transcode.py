"""The rendition ladder and the one ffmpeg command that produces everything from one decode.

``plan_ladder`` picks the rungs (1080p, 720p, 480p, 360p, 240p) that fit the source: a rung's
number is the frame's short side, so a portrait 360x640 phone video gets 360p and 240p, never an
upscaled 480p. ``build_command`` (ffmpeg-python) decodes the source once and, in one process:

- scales the frames down the ladder, each rendition from the one above it (``split`` + ``scale``),
  and encodes each once as H.264 (quality-targeted, capped per rung, keyframes forced on HLS segment
  boundaries); the audio is encoded once as AAC and muxed into every rendition;
- writes them through one ``tee`` output: per rendition an MP4 with ``+faststart`` (the index first,
  so playback starts before the download ends) and, with HLS, a variant of MPEG-TS segments
  (``HLS_SEGMENT_SECONDS``), each slave selecting its streams;
- picks the thumbnails in the same pass (a ``select`` filter at evenly spread times);
- optionally writes the audio track as MP3.

The source is read with the probe's whitelists (``probe.INPUT_WHITELISTS``: local file, accepted
demuxers only), so a playlist that reached this far still opens nothing else. ffmpeg writes
relative paths under its working directory, so no path in the tee specification
needs escaping. ``master_playlist`` writes the HLS master playlist from the variants actually
produced (bandwidths measured on their segments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from actors.media.probe import INPUT_WHITELISTS, input_url

HLS_SEGMENT_SECONDS = 4
CRF = 23
THUMBNAIL_SHORT_SIDE = 360
MP3_BITRATE = "128k"
AUDIO_KBPS = 128


@dataclass(frozen=True)
class Rung:
    name: str
    short_side: int
    video_kbps: int  # the cap (maxrate) of a quality-targeted (CRF) encode


LADDER = (
    Rung("1080p", 1080, 5000),
    Rung("720p", 720, 2800),
    Rung("480p", 480, 1400),
    Rung("360p", 360, 800),
    Rung("240p", 240, 400),
)
RUNG_NAMES = tuple(rung.name for rung in LADDER)


@dataclass(frozen=True)
class Rendition:
    name: str
    width: int
    height: int
    video_kbps: int

    @property
    def mp4(self) -> str:
        return f"mp4/{self.name}.mp4"

    @property
    def playlist(self) -> str:
        return f"hls/{self.name}/index.m3u8"

    @property
    def segments(self) -> str:
        return f"hls/{self.name}/segment_%05d.ts"


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The frame size whose short side is ``short_side``, same aspect ratio, even dimensions."""
    if width >= height:
        return _even(width * short_side / height), _even(short_side)
    return _even(short_side), _even(height * short_side / width)


def plan_ladder(width: int, height: int, requested: Sequence[str] | None = None) -> list[Rendition]:
    """The renditions to make from a ``width`` x ``height`` source, largest first.

    Only the rungs whose short side fits the source's are made. When none fits (a source smaller
    than every requested rung), one rendition at the source's own size is made, with the smallest
    requested rung's bitrates, named after its short side (e.g. ``180p``).
    """
    wanted = [rung for rung in LADDER if requested is None or rung.name in requested]
    short = min(width, height)
    fitting = [rung for rung in wanted if rung.short_side <= short]
    if not fitting:
        smallest = (wanted or list(LADDER))[-1]
        side = _even(short) if short >= 2 else 2
        fitting = [Rung(f"{side}p", side, smallest.video_kbps)]
    renditions = []
    for rung in fitting:
        w, h = scaled(width, height, rung.short_side)
        renditions.append(Rendition(rung.name, w, h, rung.video_kbps))
    return renditions


def thumbnail_times(duration: float, count: int) -> list[float]:
    """Evenly spread times, in the middle of ``count`` equal slices (never the black first frame)."""
    return [round((i + 0.5) * duration / count, 3) for i in range(count)]


@dataclass(frozen=True)
class TranscodeJob:
    """Everything one ffmpeg run makes from one source."""

    source: Path
    width: int  # the source's displayed frame size
    height: int
    duration: float
    video_index: int
    audio_index: int | None
    renditions: list[Rendition]
    hls: bool = True
    thumbnails: int = 5
    extract_audio: bool = False

    @property
    def thumbnail_size(self) -> tuple[int, int]:
        return scaled(self.width, self.height, min(THUMBNAIL_SHORT_SIDE, min(self.width, self.height)))

    @property
    def makes_audio(self) -> bool:
        return self.extract_audio and self.audio_index is not None

    def directories(self) -> list[str]:
        """The directories ffmpeg writes into (it does not create them)."""
        dirs = ["mp4"]
        if self.hls:
            dirs += [f"hls/{r.name}" for r in self.renditions]
        if self.thumbnails:
            dirs.append("thumbnails")
        if self.makes_audio:
            dirs.append("audio")
        return dirs


def build_command(
    job: TranscodeJob, *, ffmpeg_path: str = "ffmpeg", preset: str = "veryfast", threads: int = 0
) -> list[str]:
    """The ffmpeg command line (run it in the output directory) that makes all of ``job``."""
    threading = {"threads": str(threads)} if threads else {}
    # The same whitelists as the probe: ffmpeg opens the source again and must read it the same way.
    source = ffmpeg.input(input_url(job.source), **INPUT_WHITELISTS, **threading)
    frames = source[str(job.video_index)].filter("format", "yuv420p").filter("setsar", "1")
    if job.thumbnails:
        branches = frames.filter_multi_output("split", 2)
        frames, for_thumbnails = branches[0], branches[1]
    # Each rendition is scaled from the one above it (720p from the source, 480p from 720p...):
    # every scaler works on the smallest frames it can.
    scaled = []
    for index, rendition in enumerate(job.renditions):
        resized = frames.filter("scale", rendition.width, rendition.height)
        if index < len(job.renditions) - 1:
            pair = resized.filter_multi_output("split", 2)
            resized, frames = pair[0], pair[1]
        scaled.append(resized)
    audio = source[str(job.audio_index)] if job.audio_index is not None else None
    options: dict[str, str] = {
        "c:v": "libx264",
        "preset": preset,
        "crf": str(CRF),
        "force_key_frames": f"expr:gte(t,n_forced*{HLS_SEGMENT_SECONDS})",
        "map_metadata": "-1",
        "map_chapters": "-1",
        **threading,
    }
    for index, rendition in enumerate(job.renditions):
        options[f"maxrate:v:{index}"] = f"{rendition.video_kbps}k"
        options[f"bufsize:v:{index}"] = f"{2 * rendition.video_kbps}k"
    if audio is not None:
        # One AAC encode, muxed into every rendition (the tee muxer's ``select`` picks the streams).
        options |= {"c:a": "aac", "b:a": f"{AUDIO_KBPS}k", "ac": "2"}
    streams = [*scaled, audio] if audio is not None else scaled
    outputs = [ffmpeg.output(*streams, tee_targets(job), format="tee", **options)]
    if job.thumbnails:
        count, duration = job.thumbnails, job.duration
        width, height = job.thumbnail_size
        picked = for_thumbnails.filter("select", f"gte(t,(selected_n+0.5)*{duration:.3f}/{count})").filter(
            "scale", width, height
        )
        outputs.append(
            ffmpeg.output(
                picked, "thumbnails/%02d.jpg", fps_mode="vfr", **{"frames:v": str(count), "q:v": "3"}
            )
        )
    if job.makes_audio and audio is not None:
        outputs.append(
            ffmpeg.output(
                audio, "audio/audio.mp3", **{"c:a": "libmp3lame", "b:a": MP3_BITRATE, "map_metadata": "-1"}
            )
        )
    command: list[str] = ffmpeg.merge_outputs(*outputs).compile(cmd=ffmpeg_path)
    global_args = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1", "-y"]
    if threads:
        global_args += ["-filter_complex_threads", str(threads)]
    return [command[0], *global_args, *command[1:]]


def tee_targets(job: TranscodeJob) -> str:
    """The ``tee`` muxer's targets: per rendition an MP4 with faststart and, with HLS, a variant,
    each selecting its video stream (``v:N``) and the shared audio (``a``)."""
    targets = []
    for index, rendition in enumerate(job.renditions):
        # The tee syntax wants the select value quoted, and the quotes escaped.
        select = f"select=\\'v:{index},a\\'" if job.audio_index is not None else f"select=\\'v:{index}\\'"
        targets.append(f"[{select}:f=mp4:movflags=+faststart]{rendition.mp4}")
        if job.hls:
            targets.append(
                f"[{select}:f=hls:hls_time={HLS_SEGMENT_SECONDS}:hls_playlist_type=vod"
                f":hls_flags=independent_segments:hls_segment_filename={rendition.segments}]{rendition.playlist}"
            )
    return "|".join(targets)


# HLS playlists


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float


def read_playlist(path: Path) -> list[Segment]:
    """The segments of a media playlist, with their durations (``#EXTINF``)."""
    segments = []
    duration = 0.0
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#"):
            segments.append(Segment(line, duration))
    return segments


@dataclass(frozen=True)
class Variant:
    """One rendition as the master playlist announces it."""

    uri: str  # relative to the master playlist
    width: int
    height: int
    peak_bps: int
    average_bps: int
    codecs: str
    frame_rate: float | None = None


def measure_variant(playlist: Path) -> tuple[int, int]:
    """(peak, average) bits per second of a variant, measured on its segment files."""
    segments = read_playlist(playlist)
    peak = 0.0
    total_bytes = 0
    total_seconds = 0.0
    for segment in segments:
        size = (playlist.parent / segment.uri).stat().st_size
        total_bytes += size
        total_seconds += segment.duration
        if segment.duration > 0:
            peak = max(peak, size * 8 / segment.duration)
    average = total_bytes * 8 / total_seconds if total_seconds else 0.0
    return int(peak or average) + 1, int(average) + 1


def master_playlist(variants: Sequence[Variant]) -> str:
    """An HLS master playlist listing ``variants`` in the given order (players start at the first)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        attributes = [
            f"BANDWIDTH={variant.peak_bps}",
            f"AVERAGE-BANDWIDTH={variant.average_bps}",
            f"RESOLUTION={variant.width}x{variant.height}",
        ]
        if variant.frame_rate:
            attributes.append(f"FRAME-RATE={variant.frame_rate:.3f}")
        attributes.append(f'CODECS="{variant.codecs}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), variant.uri]
    return "\n".join(lines) + "\n"


_AVC_PROFILES = {
    "constrained baseline": "42c0",
    "baseline": "4200",
    "main": "4d40",
    "extended": "5800",
    "high": "6400",
}


def codecs_string(profile: str | None, level: int | None, has_audio: bool) -> str:
    """The RFC 6381 ``CODECS`` value of an H.264 (+ AAC-LC) rendition, e.g. ``avc1.64001f,mp4a.40.2``."""
    prefix = _AVC_PROFILES.get((profile or "").lower(), "6400")
    video = f"avc1.{prefix}{(level or 31):02x}"
    return f"{video},mp4a.40.2" if has_audio else video
