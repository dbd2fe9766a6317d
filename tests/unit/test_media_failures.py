"""Which failed ffmpeg runs blame the source (permanent) and which the worker (transient).

The error outputs are ffmpeg 5.1's own, as it wrote them for these cases; the integration tests run
the two main ones for real (a source whose data is noise, a preset the build refuses).
"""

from __future__ import annotations

import pytest

from actors.media.errors import FFmpegFailedError, InvalidMediaError
from actors.media.failures import ffmpeg_failure

UNDECODABLE = """\
[h264 @ 0x560efe4c3900] Invalid NAL unit size (724640950 > 8654).
[h264 @ 0x560efe4c3900] Error splitting the input into NAL units.
Error while decoding stream #0:0: Invalid data found when processing input
Cannot determine format of input stream 0:0 after EOF
Error marking filters as finished"""

ENVIRONMENT = {
    "no such encoder": "Unknown encoder 'libx264'",
    "a preset the build lacks": (
        "x264 [error]: invalid preset 'bogus'\n"
        "[libx264 @ 0x560ee6630200] Error setting preset/tune bogus/(null)."
    ),
    "an output it cannot create": "mp4/720p.mp4: Not a directory",
    "an output it may not write": "[tee @ 0x55d0] mp4/720p.mp4: Permission denied",
    "a full disk among decode errors": UNDECODABLE + "\nhls/720p/segment_00003.ts: No space left on device",
    "a message nobody foresaw": "Error marking filters as finished",
}


def test_a_source_ffmpeg_cannot_decode_is_a_permanent_error_naming_the_problem() -> None:
    error = ffmpeg_failure(1, UNDECODABLE)
    assert isinstance(error, InvalidMediaError)
    assert str(error).startswith("ffmpeg could not decode the source (exit status 1): ")
    assert "Cannot determine format of input stream 0:0 after EOF" in str(error)


@pytest.mark.parametrize("case", ENVIRONMENT)
def test_a_failure_of_the_worker_s_environment_is_transient(case: str) -> None:
    assert isinstance(ffmpeg_failure(1, ENVIRONMENT[case]), FFmpegFailedError)


@pytest.mark.parametrize("returncode", [-9, 137, 143])
def test_a_killed_ffmpeg_is_transient_whatever_it_wrote(returncode: int) -> None:
    assert isinstance(ffmpeg_failure(returncode, UNDECODABLE), FFmpegFailedError)
