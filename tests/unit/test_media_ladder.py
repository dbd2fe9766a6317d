"""The rendition ladder, the ffmpeg command, HLS playlists and source validation, without running ffmpeg."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from actors.media.errors import InvalidMediaError
from actors.media.probe import check_video, parse
from actors.media.transcode import (
    Rendition,
    TranscodeJob,
    Variant,
    build_command,
    codecs_string,
    master_playlist,
    measure_variant,
    plan_ladder,
    read_playlist,
    thumbnail_times,
)


def sizes(renditions: list[Rendition]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in renditions]


def test_a_1080p_source_gets_the_whole_ladder() -> None:
    assert sizes(plan_ladder(1920, 1080)) == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
        ("240p", 426, 240),
    ]


def test_the_ladder_never_goes_above_the_source() -> None:
    # Given a 640x360 source, When every rung is asked for
    renditions = plan_ladder(640, 360, ["1080p", "720p", "480p", "360p", "240p"])
    # Then only the rungs at or below 360 lines are made
    assert sizes(renditions) == [("360p", 640, 360), ("240p", 426, 240)]


def test_a_portrait_video_is_measured_by_its_short_side() -> None:
    # A 360x640 phone video is "360p": no upscaled 480p (480x854) is made
    assert sizes(plan_ladder(360, 640)) == [("360p", 360, 640), ("240p", 240, 426)]


def test_only_the_requested_rungs_are_made() -> None:
    assert sizes(plan_ladder(1280, 720, ["720p", "360p"])) == [("720p", 1280, 720), ("360p", 640, 360)]


def test_a_source_smaller_than_every_rung_gets_one_rendition_at_its_own_size() -> None:
    [rendition] = plan_ladder(160, 120)
    assert (rendition.name, rendition.width, rendition.height) == ("120p", 160, 120)
    assert rendition.video_kbps == 400  # the smallest rung's bitrates


def test_odd_sizes_become_even_as_h264_requires() -> None:
    [rendition] = plan_ladder(301, 241, ["240p"])
    assert rendition.width % 2 == 0 and rendition.height == 240


def test_thumbnails_are_spread_evenly_away_from_the_first_frame() -> None:
    assert thumbnail_times(10.0, 5) == [1.0, 3.0, 5.0, 7.0, 9.0]


def job(**overrides: Any) -> TranscodeJob:
    values: dict[str, Any] = {
        "source": Path("/uploads/lesson.mp4"),
        "width": 1280,
        "height": 720,
        "duration": 20.0,
        "video_index": 0,
        "audio_index": 1,
        "renditions": plan_ladder(1280, 720, ["720p", "480p", "360p"]),
        "thumbnails": 5,
        "extract_audio": True,
    }
    return TranscodeJob(**(values | overrides))


def test_one_ffmpeg_command_decodes_once_and_writes_every_output() -> None:
    command = build_command(job(), preset="veryfast", threads=2)
    # One input, decoded once: the ladder scaled in a cascade, and a branch for the thumbnails
    assert command.count("-i") == 1
    graph = command[command.index("-filter_complex") + 1]
    assert graph.count("split=2") == 3
    assert "scale=1280:720" in graph and "scale=854:480" in graph and "scale=640:360" in graph
    # One tee output: each rendition's MP4 (faststart) and HLS variant select its video and the audio
    [tee] = [arg for arg in command if arg.startswith("[select=")]
    slaves = tee.split("|")
    assert slaves[:2] == [
        "[select=\\'v:0,a\\':f=mp4:movflags=+faststart]mp4/720p.mp4",
        "[select=\\'v:0,a\\':f=hls:hls_time=4:hls_playlist_type=vod:hls_flags=independent_segments"
        ":hls_segment_filename=hls/720p/segment_%05d.ts]hls/720p/index.m3u8",
    ]
    assert [slave.rsplit("]", 1)[1] for slave in slaves] == [
        "mp4/720p.mp4",
        "hls/720p/index.m3u8",
        "mp4/480p.mp4",
        "hls/480p/index.m3u8",
        "mp4/360p.mp4",
        "hls/360p/index.m3u8",
    ]
    # Each rendition capped at its rung's bitrate; H.264 for all video streams, one AAC encode
    assert command[command.index("-maxrate:v:1") + 1] == "1400k"
    assert command[command.index("-c:v") + 1] == "libx264" and command.count("aac") == 1
    assert "thumbnails/%02d.jpg" in command and "audio/audio.mp3" in command
    # Progress on stdout; the threads cap on decoding, filtering and the encoders
    assert command[command.index("-progress") + 1] == "pipe:1"
    assert command[command.index("-filter_complex_threads") + 1] == "2"
    assert command.count("-threads") == 2


def test_an_audio_less_source_maps_no_audio() -> None:
    command = build_command(job(audio_index=None, hls=False, thumbnails=0))
    assert "aac" not in command and "audio/audio.mp3" not in command
    assert "-threads" not in command
    [tee] = [arg for arg in command if arg.startswith("[select=")]
    assert tee.split("|") == [
        f"[select=\\'v:{i}\\':f=mp4:movflags=+faststart]mp4/{name}.mp4"
        for i, name in enumerate(("720p", "480p", "360p"))
    ]


def test_the_master_playlist_lists_every_variant(tmp_path: Path) -> None:
    # Given a variant playlist with two segments of known sizes
    (tmp_path / "index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nsegment_00000.ts\n#EXTINF:2.0,\nsegment_00001.ts\n"
        "#EXT-X-ENDLIST\n"
    )
    (tmp_path / "segment_00000.ts").write_bytes(b"x" * 100_000)
    (tmp_path / "segment_00001.ts").write_bytes(b"x" * 100_000)
    assert [s.uri for s in read_playlist(tmp_path / "index.m3u8")] == ["segment_00000.ts", "segment_00001.ts"]
    # Then its peak bandwidth is its densest segment and its average the whole
    peak, average = measure_variant(tmp_path / "index.m3u8")
    assert peak == 400_001 and average == 266_667
    text = master_playlist(
        [Variant("720p/index.m3u8", 1280, 720, peak, average, codecs_string("High", 31, True), 25.0)]
    )
    assert text.splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-STREAM-INF:BANDWIDTH=400001,AVERAGE-BANDWIDTH=266667,RESOLUTION=1280x720,"
        'FRAME-RATE=25.000,CODECS="avc1.64001f,mp4a.40.2"',
        "720p/index.m3u8",
    ]


def test_codecs_strings() -> None:
    assert codecs_string("Constrained Baseline", 30, False) == "avc1.42c01e"
    assert codecs_string("Main", 40, True) == "avc1.4d4028,mp4a.40.2"


def probe_data(**format_overrides: Any) -> dict[str, Any]:
    return {
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "12.5", **format_overrides},
        "streams": [
            {"index": 0, "codec_type": "video", "codec_name": "png", "width": 300, "height": 300,
             "disposition": {"attached_pic": 1}},
            {"index": 1, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
             "avg_frame_rate": "30000/1001", "side_data_list": [{"rotation": -90}]},
            {"index": 2, "codec_type": "audio", "codec_name": "aac", "channels": 2, "sample_rate": "48000"},
        ],
    }  # fmt: skip


def test_probe_skips_cover_art_and_applies_rotation() -> None:
    info = parse(probe_data())
    assert info.video is not None and info.audio is not None
    assert (info.video.index, info.video.width, info.video.height) == (1, 1080, 1920)
    assert round(info.video.fps, 2) == 29.97
    assert info.audio.index == 2
    assert check_video(info, name="lesson.mp4", max_duration=60) is info.video


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (probe_data(duration="7200"), "lesson.mp4 lasts 2h00m00s, longer than the 1h00m00s limit"),
        ({"format": {"format_name": "png_pipe"}, "streams": []}, "is an image (png_pipe), not a video"),
        ({"format": {"format_name": "mp3"}, "streams": [probe_data()["streams"][2]]}, "no video stream"),
        (probe_data(duration="N/A"), "has no duration"),
    ],
)
def test_unusable_sources_are_refused_with_the_reason(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidMediaError, match=re.escape(problem)):
        check_video(parse(data), name="lesson.mp4", max_duration=3600)


def test_ffmpeg_reads_the_source_as_a_local_file_through_the_accepted_demuxers_only() -> None:
    # When the transcode command is built for a source whose name has a colon
    command = build_command(job(source=Path("/work/up:loads/lesson.mp4")))
    # Then the input is a file: URL, opened with the file protocol and the accepted demuxers only
    before_input = command[: command.index("-i")]
    assert command[command.index("-i") + 1] == "file:/work/up:loads/lesson.mp4"
    assert before_input[before_input.index("-protocol_whitelist") + 1] == "file"
    accepted = before_input[before_input.index("-format_whitelist") + 1].split(",")
    assert "mov" in accepted and not {"hls", "concat", "dash", "image2"} & set(accepted)
