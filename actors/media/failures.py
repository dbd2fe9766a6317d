"""What a failed ffmpeg run means: the source is broken (permanent) or the machine is (transient).

The source has already passed ffprobe when ffmpeg runs, so a failure is blamed on it only when
ffmpeg's messages say it could not demux or decode it. Anything else (a missing encoder, a preset
this build lacks, an output directory it cannot write, a full disk, a kill) is the worker's
environment: retrying, on another worker or after an operator fixed it, may succeed, and the asset
must not be marked failed forever for it.
"""

from __future__ import annotations

import re

from actors.media.errors import FFmpegFailedError, InvalidMediaError
from actors.media.probe import ffmpeg_messages, refusal, refused_format

#: Messages of a worker's environment, checked first: they decide even beside decode errors (a
#: damaged source on a full disk is still worth retrying once the disk has room).
ENVIRONMENT = re.compile(
    r"No space left|Cannot allocate memory|Killed|Permission denied|Read-only file system"
    r"|Not a directory|No such file or directory|Input/output error|Too many open files"
    r"|Unknown encoder|Encoder not found|Error setting preset|invalid preset|Unrecognized option"
    r"|Error while opening encoder|Error initializing output stream|Could not write header"
    r"|Could not open file|Failed to open|Error opening output",
    re.IGNORECASE,
)
#: Messages of a source ffmpeg cannot demux or decode (as ffmpeg 5 to 7 word them).
SOURCE_DAMAGE = re.compile(
    r"Error while decoding stream|error while decoding|Invalid data found when processing input"
    r"|Error splitting the input into NAL units|Invalid NAL unit|missing picture|no frame!"
    r"|corrupt|moov atom not found|partial file|stream ends prematurely|Error demuxing"
    r"|Error during demuxing|Error submitting packet to decoder|decode_slice_header error"
    r"|Cannot determine format of input stream",
    re.IGNORECASE,
)


def ffmpeg_failure(returncode: int, stderr: str) -> InvalidMediaError | FFmpegFailedError:
    """The error for an ffmpeg run that exited with ``returncode`` after writing ``stderr``."""
    refused = refused_format(stderr)
    if refused is not None:  # the input whitelists: a playlist (or any unaccepted format) never gets better
        return InvalidMediaError(refusal("the source", refused))
    tail = ffmpeg_messages(stderr) or "no message"
    killed = returncode < 0 or returncode in (137, 143)
    if not killed and not ENVIRONMENT.search(stderr) and SOURCE_DAMAGE.search(stderr):
        return InvalidMediaError(f"ffmpeg could not decode the source (exit status {returncode}): {tail}")
    return FFmpegFailedError(f"ffmpeg failed (exit status {returncode}): {tail}")
