"""Errors of the media domain (see ``contracts.errors`` for the whole tree)::

    PermanentError
    ├── InvalidMediaError        the source is not usable: not a video / image, no video stream,
    │                            corrupt, truncated, too long, a decompression bomb
    ├── AssetError               the asset row is missing or of the other kind
    └── ProcessingCancelledError the job was cancelled while it ran (the actor acks it); shared
                                 by every actor, defined in ``contracts.errors``
    TransientError
    ├── FFmpegTimeoutError       ffmpeg outlived the job's time limit and was killed
    └── FFmpegFailedError        ffmpeg failed for the worker's sake (killed, disk full, missing
                                 encoder, unwritable output); may pass next time

A failed ffmpeg run is an ``InvalidMediaError`` only when its messages show that the source (which
passed ffprobe) cannot be demuxed or decoded: ``actors.media.failures`` decides.
"""

from __future__ import annotations

from contracts.errors import PermanentError, ProcessingCancelledError, TransientError

__all__ = [
    "AssetError",
    "FFmpegFailedError",
    "FFmpegTimeoutError",
    "InvalidMediaError",
    "ProcessingCancelledError",
]


class InvalidMediaError(PermanentError):
    """Raised when a source file cannot be processed: its message names the problem."""


class AssetError(PermanentError):
    """Raised when the media asset does not exist or is not of the kind the actor processes."""


class FFmpegTimeoutError(TransientError):
    """Raised when ffmpeg or ffprobe ran past its deadline and was killed."""


class FFmpegFailedError(TransientError):
    """Raised when ffmpeg failed for a reason outside the source (killed, disk full, its build)."""
