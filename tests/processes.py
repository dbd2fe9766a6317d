"""Helpers for tests that run programs as subprocesses: ports, waiting, stopping, required tools."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def terminate(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM, then SIGKILL the process group after ``timeout``; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def required_command(name: str, package: str) -> str:
    """The path of a command from a Debian package: missing, skip locally and fail in CI."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (Debian package {package})"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have it: see .ci/run)")
        pytest.skip(message)
    return found
