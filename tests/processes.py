"""Real processes the tests start: Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """A real ``celery -A tasklane.worker worker`` process; its output is kept for assertions."""

    def __init__(
        self, env: dict[str, str], queue: str, *extra: str, app: str = "tasklane.worker"
    ) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "-Q",
                queue,
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                *extra,
            ],
            cwd=ROOT,
            env=os.environ | env | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_ready(self, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("ready." in line for line in self.lines):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("celery worker did not start:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes (a crash, not a shutdown)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
