"""Media files for the media tests: small clips made by ffmpeg once per test session, and broken files.

``media_files()`` returns the session's library (a temporary directory removed at exit); each clip is
generated on first use (``testsrc2`` video + ``sine`` audio, H.264/AAC, the index at the end of the
file as a camera writes it, so that a truncated copy has no index at all). ``ffprobe_json`` and
``streams_of`` read outputs back the way the tests check them. ``FakeS3`` is moto's S3 server,
started for real on a free port, for storage on S3.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from store.storage import LocalStorage, S3Storage, Storage


@dataclass(frozen=True)
class ClipSpec:
    width: int
    height: int
    seconds: float
    audio: bool = True
    rate: int = 25


CLIPS = {
    "landscape": ClipSpec(640, 360, 3),
    "small": ClipSpec(320, 240, 2),
    "portrait": ClipSpec(360, 640, 2),
    "silent": ClipSpec(320, 240, 2, audio=False),
    "hd": ClipSpec(1280, 720, 2),
}


def generate_clip(path: Path, spec: ClipSpec, *, preset: str = "ultrafast", crf: int = 23) -> Path:
    """Write a ``testsrc2`` (+ ``sine``) clip of ``spec`` to ``path`` with ffmpeg."""
    size = f"{spec.width}x{spec.height}"
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={spec.rate}:duration={spec.seconds}"]
    if spec.audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={spec.seconds}"]
    args += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    if spec.audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += ["-shortest", str(path)]
    subprocess.run(args, check=True, timeout=300)
    return path


class MediaFiles:
    """The session's test media, generated on demand under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()

    def _cached(self, name: str, make: Any) -> Path:
        path = self.root / name
        with self._lock:
            if not path.exists():
                partial = path.with_name("partial-" + path.name)
                make(partial)
                os.replace(partial, path)
        return path

    def clip(self, name: str) -> Path:
        """One of ``CLIPS`` as an MP4."""
        return self._cached(f"{name}.mp4", lambda path: generate_clip(path, CLIPS[name]))

    def custom_clip(self, width: int, height: int, seconds: float, *, audio: bool = True) -> Path:
        spec = ClipSpec(width, height, seconds, audio=audio)
        return self._cached(
            f"clip-{width}x{height}-{seconds}s-{int(audio)}.mp4", lambda p: generate_clip(p, spec)
        )

    def truncated(self) -> Path:
        """The first half of a clip: the index (moov), at the end, is gone."""

        def make(path: Path) -> None:
            data = self.clip("small").read_bytes()
            path.write_bytes(data[: len(data) // 2])

        return self._cached("truncated.mp4", make)

    def damaged(self) -> Path:
        """A clip with its index first (faststart) but its media data cut short: it probes fine."""

        def make(path: Path) -> None:
            whole = path.with_name("whole-" + path.name)
            args = [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-y",
                "-i",
                str(self.clip("landscape")),
            ]
            subprocess.run(
                [*args, "-c", "copy", "-movflags", "+faststart", str(whole)], check=True, timeout=60
            )
            data = whole.read_bytes()
            path.write_bytes(data[: len(data) // 3])
            whole.unlink()

        return self._cached("damaged.mp4", make)

    def garbled(self) -> Path:
        """A clip whose index is intact (faststart) but whose media data is all noise: it probes
        as a valid 3 s video, then not one frame decodes and ffmpeg exits with an error."""

        def make(path: Path) -> None:
            whole = path.with_name("whole-" + path.name)
            args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
            args += ["-i", str(self.clip("landscape")), "-c", "copy", "-movflags", "+faststart", str(whole)]
            subprocess.run(args, check=True, timeout=60)
            data = bytearray(whole.read_bytes())
            start = data.index(b"mdat") + 4
            data[start:] = random.Random(20261201).randbytes(len(data) - start)
            path.write_bytes(bytes(data))
            whole.unlink()

        return self._cached("garbled.mp4", make)

    def random_bytes(self) -> Path:
        # Seeded: some random bytes happen to look like a format ffprobe knows (a file without streams)
        return self._cached(
            "random.mp4", lambda path: path.write_bytes(random.Random(20261122).randbytes(200_000))
        )

    def text_file(self) -> Path:
        """A text file renamed .mp4."""
        return self._cached("notes.mp4", lambda path: path.write_text("Lesson 3 notes\n" * 500))

    def still_image(self) -> Path:
        """A PNG image renamed .mp4."""
        return self._cached("still.mp4", lambda path: Image.new("RGB", (320, 240), "teal").save(path, "PNG"))

    def audio_only(self) -> Path:
        def make(path: Path) -> None:
            args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi"]
            args += ["-i", "sine=frequency=440:duration=2", "-c:a", "aac", "-f", "mp4", str(path)]
            subprocess.run(args, check=True, timeout=60)

        return self._cached("audio.m4a", make)


@functools.cache
def media_files() -> MediaFiles:
    root = Path(tempfile.mkdtemp(prefix="edujobs-media-fixtures-"))
    atexit.register(shutil.rmtree, root, True)
    return MediaFiles(root)


def naming_other_files(target: Path, kind: str) -> str:
    """The text of a file that makes ffmpeg, left to detect the format, read ``target`` as well:
    an HLS playlist naming it through ``file://`` (``hls``) or an ffconcat list (``concat``).
    Saved as ``evil.mp4``, it is what an attacker uploads in place of a video."""
    if kind == "hls":
        seconds = float(ffprobe_json(target)["format"]["duration"])  # the whole video, as one segment
        return (
            f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{int(seconds) + 1}\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:{seconds:.3f},\n{target.as_uri()}\n#EXT-X-ENDLIST\n"
        )
    if kind == "concat":
        return f"ffconcat version 1.0\nfile '{target}'\n"
    raise ValueError(f"unknown kind {kind!r}")


def ffprobe_json(path: Path) -> dict[str, Any]:
    """ffprobe's view of a file: ``format`` and ``streams``."""
    args = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    result = subprocess.run(args, check=True, capture_output=True, timeout=60)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def streams_of(path: Path, kind: str) -> list[dict[str, Any]]:
    return [s for s in ffprobe_json(path)["streams"] if s.get("codec_type") == kind]


def top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order (``moov`` before ``mdat`` = faststart)."""
    boxes = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            boxes.append(kind)
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            elif size == 0:
                break
            f.seek(size - 8, os.SEEK_CUR)
    return boxes


def ffmpeg_processes_matching(text: str) -> list[str]:
    """Command lines of the running ffmpeg and ffprobe processes that contain ``text`` (a plain
    substring, not a pattern), read from ``/proc``. Zombies, whose command line is gone, do not count:
    they are dead, waiting only for a parent to reap them."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # it exited meanwhile
        if not args or Path(os.fsdecode(args[0])).name not in ("ffmpeg", "ffprobe"):
            continue
        line = " ".join(os.fsdecode(arg) for arg in args if arg)
        if text in line:
            found.append(f"{cmdline.parent.name} {line}")
    return found


class FakeS3:
    """moto's S3 server on a free port of 127.0.0.1 (any credentials are accepted)."""

    def __init__(self) -> None:
        self.url = ""
        self._server: Any = None

    def start(self) -> FakeS3:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def storage(self, bucket: str, prefix: str = "") -> S3Storage:
        return S3Storage(
            bucket,
            prefix,
            endpoint_url=self.url,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
        )

    def create_bucket(self) -> str:
        name = f"edujobs-test-{uuid.uuid4().hex[:12]}"
        self.storage(name).client.create_bucket(Bucket=name)
        return name


def local_or_s3_storage(request: Any, tmp_path: Path) -> Storage:
    """The storage of a test parametrized ``["local", "s3"]``: a directory of ``tmp_path``, or a new
    bucket of the module's ``fake_s3`` fixture (under the ``edujobs`` prefix)."""
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    fake: FakeS3 = request.getfixturevalue("fake_s3")
    return fake.storage(fake.create_bucket(), prefix="edujobs")
