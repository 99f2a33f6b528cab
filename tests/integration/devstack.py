"""`tasklane dev` run as a user runs it, for the tests that drive the whole local stack."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tasklane.local.postgres import free_port

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def http(method: str, url: str, body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def clean_environment() -> dict[str, str]:
    """A user's shell: none of the settings that other tests point at their own servers."""
    from tasklane.config import ENV_VARS

    dropped = set(ENV_VARS) | {"AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


class Stack:
    def __init__(self, *options: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tasklane-e2e-"))
        self.dir.chmod(0o755)  # as root, Postgres runs as the postgres user and must reach it
        self.port = free_port()
        self.lines: list[str] = []
        env = clean_environment() | {"PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tasklane.cli",
                "--data-dir",
                str(self.dir / "state"),
                "dev",
                "--port",
                str(self.port),
                "--postgres-port",
                str(free_port()),
                "--parameter-overrides",
                "TaskModules=tasklane.examples,tests.tasks",
                *options,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, like a terminal's job
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def state_file(self) -> Path:
        return self.dir / "state" / "stack.json"

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def cli(self, *args: str, columns: int = 200) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cli_command(*args),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.cli_env(columns),
        )

    def cli_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tasklane.cli", "--data-dir", str(self.dir / "state"), *args]

    def cli_env(self, columns: int = 200) -> dict[str, str]:
        return clean_environment() | {
            "PYTHONPATH": str(ROOT),
            "COLUMNS": str(columns),
            "TASK_MODULES": "tasklane.examples,tests.tasks",
        }


@contextlib.contextmanager
def running_stack(*options: str) -> Iterator[Stack]:
    """``tasklane dev`` started as a user starts it (and ``options``); killed with everything it
    started if a test left it running."""
    stack = Stack(*options)
    try:
        wait_for(
            lambda: "local stack is up" in stack.output() or stack.process.poll() is not None,
            120,
            what="tasklane dev to start",
        )
        assert stack.process.poll() is None, stack.output()
        yield stack
    finally:
        if stack.process.poll() is None:  # a failed test: leave nothing running behind it
            children = stack.state().get("children", []) if stack.state_file.exists() else []
            os.killpg(stack.process.pid, signal.SIGKILL)
            for pid in children:  # the stack's children live in sessions of their own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["pkill", "-9", "-f", str(stack.dir)], check=False)  # its postgres
        print(stack.output()[-20000:])


def submit(stack: Stack, task: str, payload) -> str:
    status, body = http("POST", f"{stack.api}/tasks", {"task": task, "payload": payload})
    assert status == 202, body
    return body["id"]


def final(stack: Stack, task_id: str, timeout: float = 60) -> dict:
    def done():
        _, task = http("GET", f"{stack.api}/tasks/{task_id}")
        return task if task["status"] in ("succeeded", "failed") else None

    return wait_for(done, timeout, interval=0.3, what=f"task {task_id}")
