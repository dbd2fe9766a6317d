"""The ffmpeg runner: progress, deadlines, cancellation and Dramatiq's asynchronous interrupts.

Real ffmpeg (as every media test), reading a synthetic source in real time (``-re``) so that it runs
for as long as the test needs. Each run carries a unique marker in its command line so the test can
look for leftover processes with ``pgrep -f``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from dramatiq.middleware.threading import raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded

from actors.media import runner
from actors.media.errors import FFmpegFailedError, FFmpegTimeoutError, ProcessingCancelledError
from tests.media_fixtures import ffmpeg_processes_matching


def slow_ffmpeg(tmp_path: Path, seconds: float) -> tuple[list[str], str]:
    """An ffmpeg command that takes about ``seconds`` and a marker unique to it."""
    marker = str(tmp_path / f"marker-{uuid.uuid4().hex}")
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-re"]
    args += ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={seconds}", "-f", "null", marker]
    return args, marker


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_progress_is_reported_in_the_calling_thread_as_ffmpeg_writes(tmp_path: Path) -> None:
    args, _ = slow_ffmpeg(tmp_path, 1.5)
    seen: list[tuple[float, int]] = []
    done = runner.run(args, timeout=30, progress=lambda s: seen.append((s, threading.get_ident())), poll=0.1)
    assert done.returncode == 0
    assert len(seen) >= 2
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert 1.0 <= seen[-1][0] <= 1.6
    assert {thread for _, thread in seen} == {threading.get_ident()}


def test_a_run_past_its_deadline_is_killed(tmp_path: Path) -> None:
    # Given ffmpeg that would run for a minute
    args, marker = slow_ffmpeg(tmp_path, 60)
    # When its deadline is one second
    started = time.monotonic()
    with pytest.raises(FFmpegTimeoutError, match="deadline"):
        runner.run(args, timeout=1.0, poll=0.1)
    # Then it is stopped at once and no ffmpeg process is left
    assert time.monotonic() - started < 10
    assert ffmpeg_processes_matching(marker) == []


def test_a_time_limit_raised_into_the_thread_kills_ffmpeg(tmp_path: Path) -> None:
    # Given ffmpeg running in a worker thread, as in an actor
    args, marker = slow_ffmpeg(tmp_path, 60)
    outcome: list[BaseException] = []

    def actor() -> None:
        try:
            runner.run(args, timeout=120)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=actor)
    thread.start()
    wait_for(lambda: ffmpeg_processes_matching(marker))
    # When Dramatiq's TimeLimit middleware raises TimeLimitExceeded into that thread
    assert thread.ident is not None
    raise_thread_exception(thread.ident, TimeLimitExceeded)  # type: ignore[no-untyped-call]
    thread.join(timeout=10)
    # Then the exception reaches the actor and ffmpeg is gone
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [TimeLimitExceeded]
    assert ffmpeg_processes_matching(marker) == []


def test_a_cancelled_job_kills_ffmpeg(tmp_path: Path) -> None:
    args, marker = slow_ffmpeg(tmp_path, 60)
    cancel_at = time.monotonic() + 0.5
    with pytest.raises(ProcessingCancelledError):
        runner.run(args, timeout=60, should_cancel=lambda: time.monotonic() > cancel_at, cancel_check=0.1)
    assert ffmpeg_processes_matching(marker) == []


def test_a_failing_run_returns_its_status_and_error_output(tmp_path: Path) -> None:
    done = runner.run(["ffmpeg", "-hide_banner", "-i", str(tmp_path / "missing.mp4")], timeout=30)
    assert done.returncode != 0
    assert "No such file or directory" in done.stderr


def test_a_missing_program_is_a_transient_error_saying_so() -> None:
    with pytest.raises(FFmpegFailedError, match="cannot run /nonexistent/ffmpeg"):
        runner.run(["/nonexistent/ffmpeg", "-version"], timeout=5)


#: A worker in miniature: runs ffmpeg through the runner, as an actor's thread does.
WORKER = """
import sys
from actors.media import runner
runner.run(sys.argv[1:], timeout=120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ffmpeg_dies_with_a_worker_killed_outright(tmp_path: Path) -> None:
    # Given a worker process running ffmpeg (in ffmpeg's own session, out of the worker's group)
    args, marker = slow_ffmpeg(tmp_path, 60)
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=root)
    try:
        wait_for(lambda: ffmpeg_processes_matching(marker))
        # When the worker is killed with no chance to clean up (SIGKILL, the OOM killer)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        # Then its ffmpeg does not carry on for nobody
        wait_for(lambda: ffmpeg_processes_matching(marker) == [], timeout=5)
    finally:
        worker.kill()
        for line in ffmpeg_processes_matching(marker):
            os.kill(int(line.split()[0]), signal.SIGKILL)
