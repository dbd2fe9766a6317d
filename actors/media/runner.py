"""Run ffmpeg and ffprobe as children that can always be stopped.

ffmpeg-python builds command lines but runs them without a timeout, and a thread blocked in
``communicate()`` or ``readline()`` sits in a system call where Dramatiq's asynchronous exceptions
(``TimeLimitExceeded``, ``Shutdown``) cannot land. So ``run`` starts the child in its own process
group, hands its stdout to a reader thread, and waits in short slices (``proc.wait(timeout=0.5)``).
Between slices it checks the deadline and the cancellation callback and reports progress, and an
asynchronous exception raised into the waiting thread lands there. On every way out (success,
failure, timeout, cancellation, interrupt) the ``finally`` clause kills the process group and reaps
it, so no ffmpeg outlives its job. A worker killed outright (SIGKILL, the OOM killer) runs no
``finally``; on Linux the child asks the kernel (``PR_SET_PDEATHSIG``) to be killed when the thread
that started it dies, so it does not transcode on for nobody in its own session.

With ``progress=`` the child is expected to write ffmpeg's ``-progress pipe:1`` key=value lines; the
callback receives the seconds of output written so far (``out_time_us``), in the calling thread
(which is what ``actors.base.report_progress`` needs). Otherwise stdout is captured (ffprobe's JSON).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from actors.media.errors import FFmpegFailedError, FFmpegTimeoutError, ProcessingCancelledError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 2.0
STDERR_TAIL_CHARS = 4000


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Resolved once here: the child between fork and exec should do as little as it can (no imports,
# no library lookups), since other threads of the worker may have held locks at the fork.
_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes the child receive SIGKILL when its parent dies (Linux)."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the prctl: nobody would signal
            os._exit(1)

    return preexec


def remaining(deadline: float, cap: float | None = None) -> float:
    """Seconds left until ``deadline`` (``time.monotonic()``), at least 0.1, at most ``cap``."""
    left = max(0.1, deadline - time.monotonic())
    return min(left, cap) if cap is not None else left


@dataclass(frozen=True)
class Completed:
    """A child that exited by itself."""

    args: Sequence[str]
    returncode: int
    stdout: bytes
    stderr: str  # the last STDERR_TAIL_CHARS characters
    elapsed: float


class _StdoutReader(threading.Thread):
    """Drains the child's stdout so it never blocks on a full pipe; parses progress if asked."""

    def __init__(self, stream: IO[bytes], *, parse_progress: bool) -> None:
        super().__init__(name="ffmpeg-stdout", daemon=True)
        self.stream = stream
        self.parse_progress = parse_progress
        self.chunks: list[bytes] = []
        self.out_time_us = -1

    def run(self) -> None:
        try:
            for line in self.stream:
                if not self.parse_progress:
                    self.chunks.append(line)
                elif line.startswith(b"out_time_us="):
                    value = line[12:].strip()
                    if value.isdigit():
                        self.out_time_us = int(value)
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the child was killed

    def output(self) -> bytes:
        return b"".join(self.chunks)


def run(
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    progress: Callable[[float], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    poll: float = POLL_SECONDS,
    cancel_check: float = CANCEL_CHECK_SECONDS,
) -> Completed:
    """Run ``args`` to completion within ``timeout`` seconds; return its exit status and output.

    Raises ``FFmpegTimeoutError`` past the deadline, ``ProcessingCancelledError`` when
    ``should_cancel()`` turns true, ``FFmpegFailedError`` if the program cannot be started; any
    exception raised into this thread (time limit, shutdown) propagates. The child is dead by then.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=cwd,
                start_new_session=True,  # its own process group: killpg reaches everything it starts
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as e:
            raise FFmpegFailedError(f"cannot run {args[0]}: {e.strerror or e} (is ffmpeg installed?)") from e
        # From here on, whatever happens (an asynchronous exception included), the child is killed.
        assert proc.stdout is not None
        reader = _StdoutReader(proc.stdout, parse_progress=progress is not None)
        try:
            reader.start()
            _wait(
                proc, reader, started + timeout, timeout, args[0], progress, should_cancel, poll, cancel_check
            )
        finally:
            try:
                _kill(proc, Path(args[0]).name)
            except BaseException:
                _kill(proc, Path(args[0]).name)  # interrupted while killing: each interrupt comes once
                raise
            if reader.is_alive():
                reader.join(timeout=5)  # the pipe reaches EOF once the child is dead
            proc.stdout.close()
        return Completed(
            args=args,
            returncode=proc.returncode,
            stdout=reader.output(),
            stderr=_tail(stderr),
            elapsed=time.monotonic() - started,
        )


def _wait(
    proc: subprocess.Popen[bytes],
    reader: _StdoutReader,
    deadline: float,
    timeout: float,
    program: str,
    progress: Callable[[float], None] | None,
    should_cancel: Callable[[], bool] | None,
    poll: float,
    cancel_check: float,
) -> None:
    """Wait for the child in slices of ``poll`` seconds, where asynchronous exceptions can land."""
    next_cancel_check = time.monotonic() + cancel_check
    last_reported = -1
    with _exit_notifier(proc) as exited:
        while True:
            if exited(poll):
                return
            now = time.monotonic()
            if progress is not None and reader.out_time_us > last_reported:
                last_reported = reader.out_time_us
                progress(last_reported / 1_000_000)
            if now >= deadline:
                raise FFmpegTimeoutError(f"{Path(program).name} ran past its {timeout:.0f} s deadline")
            if should_cancel is not None and now >= next_cancel_check:
                next_cancel_check = now + cancel_check
                if should_cancel():
                    raise ProcessingCancelledError("the job was cancelled while it was processing")


@contextlib.contextmanager
def _exit_notifier(proc: subprocess.Popen[bytes]) -> Iterator[Callable[[float], bool]]:
    """A function that waits up to N seconds for ``proc`` to exit (reaping it) and says if it did.

    On Linux it waits on a pidfd, which wakes the moment the child exits. ``Popen.wait(timeout)``
    instead polls with sleeps doubling up to 50 ms: some 25 ms lost after every ffmpeg and ffprobe
    run, four of which make one video job."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None

    def exited(seconds: float) -> bool:
        if pidfd is None:
            try:
                proc.wait(timeout=seconds)
                return True
            except subprocess.TimeoutExpired:
                return False
        ready, _, _ = select.select([pidfd], [], [], seconds)
        if ready or proc.poll() is not None:
            proc.wait()
            return True
        return False

    try:
        yield exited
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _kill(proc: subprocess.Popen[bytes], name: str) -> None:
    """Kill the child's process group unless it exited, and reap it (never leaves a zombie)."""
    if proc.poll() is None:
        logger.warning("Killing %s (pid %d).", name, proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - STDERR_TAIL_CHARS))
    return stream.read().decode("utf-8", errors="replace").strip()
