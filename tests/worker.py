"""Run ``dramatiq actors`` as a subprocess, the way operators do, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "Worker process is ready for action."


class WorkerProcess:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        processes: int = 1,
        threads: int = 2,
        queues: tuple[str, ...] = (),
        module: str = "actors",
    ) -> None:
        self.log = Path(tempfile.mkstemp(prefix="edujobs-worker-", suffix=".log")[1])
        args = [sys.executable, "-m", "dramatiq", module, "--processes", str(processes)]
        args += ["--threads", str(threads)]
        if queues:
            args += ["--queues", *queues]
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            # Dramatiq's threads wake every dramatiq_worker_timeout ms (1 s by default) to see if
            # they should stop: a test worker stops in about 2 s instead of 4.
            env={"dramatiq_worker_timeout": "100", **os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes = processes

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(READY) >= self.processes:
                return self
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.output()[-5000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.output()[-5000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group, as an OOM kill or a lost node would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log_file.close()


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.1)
