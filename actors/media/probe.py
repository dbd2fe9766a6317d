"""ffprobe: what a media file contains, and whether it is a video edujobs can process.

``probe`` runs ffprobe (through ``runner``, so with a deadline) and returns a ``MediaInfo``;
``check_video`` turns every reason to refuse a source into an ``InvalidMediaError`` whose message
names the problem (not a media file, an image, no video stream, no duration, too long...).

A source is read through the demuxers of ``ACCEPTED_FORMATS`` only and the ``file`` protocol only
(``INPUT_OPTIONS``, given to ffprobe here and to ffmpeg by ``transcode``). An upload is a file
someone else wrote: left to detect the format, ffmpeg reads an HLS playlist, a concat list or a
DASH manifest saved as ``evil.mp4`` and opens every file it names (``file:///.../720p.mp4`` of
another asset), so a transcode would copy someone else's video into the attacker's asset. The
protocol whitelist alone does not stop that (the playlist names its files through ``file:``); the
format whitelist refuses the playlist itself before any entry is opened, and ``probe`` says which
kind of file was refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.media import runner
from actors.media.errors import InvalidMediaError

PROBE_TIMEOUT_SECONDS = 60.0
#: Larger frames than 8K are refused: a header can claim any size, and decoding it costs memory.
MAX_FRAME_PIXELS = 8192 * 8192
#: Demuxers that mean "a still image", whatever the file is called.
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe")
#: The demuxers a source may be read with: self-contained containers that open no other file or
#: URL (MP4/MOV reads external data references only with ``enable_drefs``, off by default), audio
#: files (refused later as audio-only, and the MP3 the transcode writes), and the single-image
#: readers (refused later as images, with that reason). Not ``image2``: it reads a pattern of file
#: names (``img%03d.jpg``), i.e. other files.
ACCEPTED_FORMATS = (
    "mov", "matroska", "avi", "flv", "mpegts", "mpeg", "ogg", "asf",
    "mp3", "wav", "aac", "flac",
    *(name for name in IMAGE_FORMATS if name != "image2"),
)  # fmt: skip
#: ffprobe's and ffmpeg's options for a source: the local-file protocol, the accepted demuxers.
INPUT_WHITELISTS = {"protocol_whitelist": "file", "format_whitelist": ",".join(ACCEPTED_FORMATS)}
INPUT_OPTIONS = tuple(arg for option, value in INPUT_WHITELISTS.items() for arg in (f"-{option}", value))
#: Demuxers that read other files or URLs named inside the file, as a refusal explains them.
REFERENCE_FORMATS = {
    "hls": "an HLS playlist",
    "concat": "a concat list",
    "dash": "a DASH manifest",
    "imf": "an IMF composition",
    "image2": "an image sequence pattern",
    "sdp": "an SDP session description",
}
_REFUSED = re.compile(r"^\[(?P<format>[\w,]+) @ 0x[0-9a-f]+\] Format not on whitelist", re.MULTILINE)


@dataclass(frozen=True)
class VideoStream:
    index: int
    codec: str
    width: int  # as displayed (rotation applied)
    height: int
    fps: float
    profile: str | None = None
    level: int | None = None


@dataclass(frozen=True)
class AudioStream:
    index: int
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration: float | None
    size_bytes: int | None
    bit_rate: int | None
    video: VideoStream | None
    audio: AudioStream | None

    @property
    def is_image(self) -> bool:
        return self.format_name in IMAGE_FORMATS


def probe(
    path: Path, *, ffprobe: str = "ffprobe", timeout: float = PROBE_TIMEOUT_SECONDS, name: str | None = None
) -> MediaInfo:
    """Describe the file at ``path``; raise ``InvalidMediaError`` if ffprobe cannot read it, or if
    it is not of an accepted format (``ACCEPTED_FORMATS``: a playlist is refused unread)."""
    args = [ffprobe, "-v", "error", *INPUT_OPTIONS, "-print_format", "json", "-show_format", "-show_streams"]
    done = runner.run([*args, input_url(path)], timeout=timeout)
    try:
        data = json.loads(done.stdout or b"{}")
    except ValueError:
        data = {}
    if done.returncode != 0 or "format" not in data:
        what = name or path.name
        refused = refused_format(done.stderr)
        if refused is not None:
            raise InvalidMediaError(refusal(what, refused))
        problem = ffmpeg_messages(done.stderr, path) or "no format recognised"
        raise InvalidMediaError(f"{what} is not a media file ffprobe can read: {problem}")
    return parse(data)


def input_url(path: Path) -> str:
    """``path`` as ffmpeg's input: ``file:`` first, so that a name with a colon (``rtmp:x.mp4``)
    is never taken for another protocol."""
    return f"file:{path}"


def refused_format(stderr: str) -> str | None:
    """The demuxer ffmpeg or ffprobe refused for not being in ``ACCEPTED_FORMATS``, if it did."""
    refused = _REFUSED.search(stderr)
    return None if refused is None else refused["format"]


def refusal(name: str, format_name: str) -> str:
    """Why a source of the demuxer ``format_name`` (not in ``ACCEPTED_FORMATS``) is refused."""
    if format_name in REFERENCE_FORMATS:
        return (
            f"{name} is {REFERENCE_FORMATS[format_name]} ({format_name}), which makes ffmpeg read "
            "the other files it names: refused; upload the video file itself"
        )
    if format_name in IMAGE_FORMATS:
        return f"{name} is an image ({format_name}), not a video"
    return (
        f"{name} is not a media file ffprobe can read: its format ({format_name}) is not one of "
        f"{', '.join(ACCEPTED_FORMATS)}"
    )


def ffmpeg_messages(stderr: str, path: Path | None = None, limit: int = 3) -> str:
    """The last distinct messages of ffmpeg's error output, without the ``[demuxer @ 0x...]`` and
    file-path prefixes: ``moov atom not found; Invalid data found when processing input``."""
    messages: list[str] = []
    for line in stderr.splitlines():
        text = re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", line.strip())
        if path is not None:
            text = text.removeprefix(f"{input_url(path)}: ").removeprefix(f"{path}: ")
        if text and text not in messages:
            messages.append(text)
    return "; ".join(messages[-limit:])[:500]


def parse(data: dict[str, Any]) -> MediaInfo:
    """Build a ``MediaInfo`` from ffprobe's JSON (``-show_format -show_streams``)."""
    fmt = data.get("format", {})
    video: VideoStream | None = None
    audio: AudioStream | None = None
    for stream in data.get("streams", []):
        kind = stream.get("codec_type")
        if kind == "video" and video is None and not stream.get("disposition", {}).get("attached_pic"):
            width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
            if abs(_rotation(stream)) in (90, 270):
                width, height = height, width
            video = VideoStream(
                index=int(stream["index"]),
                codec=str(stream.get("codec_name", "")),
                width=width,
                height=height,
                fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
                profile=stream.get("profile"),
                level=int(stream["level"]) if isinstance(stream.get("level"), int) else None,
            )
        elif kind == "audio" and audio is None:
            audio = AudioStream(
                index=int(stream["index"]),
                codec=str(stream.get("codec_name", "")),
                channels=int(stream.get("channels") or 0),
                sample_rate=int(stream.get("sample_rate") or 0),
            )
    return MediaInfo(
        format_name=str(fmt.get("format_name", "")),
        duration=_float(fmt.get("duration")),
        size_bytes=_int(fmt.get("size")),
        bit_rate=_int(fmt.get("bit_rate")),
        video=video,
        audio=audio,
    )


def check_video(info: MediaInfo, *, name: str, max_duration: float) -> VideoStream:
    """Return the video stream to process, or raise ``InvalidMediaError`` saying what is wrong."""
    if info.is_image:
        raise InvalidMediaError(f"{name} is an image ({info.format_name}), not a video")
    if info.video is None:
        what = "an audio-only file" if info.audio is not None else "a file without streams"
        raise InvalidMediaError(f"{name} has no video stream ({what})")
    video = info.video
    if video.width <= 0 or video.height <= 0:
        raise InvalidMediaError(f"{name}: the video stream has no frame size (corrupt file)")
    if video.width * video.height > MAX_FRAME_PIXELS:
        raise InvalidMediaError(f"{name}: frames of {video.width}x{video.height} are larger than 8K")
    if info.duration is None or info.duration <= 0:
        raise InvalidMediaError(f"{name} has no duration (a corrupt or truncated file, or a still image)")
    if info.duration > max_duration:
        raise InvalidMediaError(
            f"{name} lasts {_clock(info.duration)}, longer than the {_clock(max_duration)} limit "
            "(EDUJOBS_MEDIA_MAX_DURATION_SECONDS)"
        )
    return video


def _rotation(stream: dict[str, Any]) -> int:
    for item in stream.get("side_data_list", []) or []:
        if "rotation" in item:
            return int(float(item["rotation"]))
    rotate = stream.get("tags", {}).get("rotate")
    return int(float(rotate)) if rotate else 0


def _rate(value: Any) -> float:
    if not value or value == "0/0":
        return 0.0
    num, _, den = str(value).partition("/")
    try:
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clock(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
