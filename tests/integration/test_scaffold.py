"""`tasklane init`: a new application passes its own tests, runs with `tasklane dev`, and
validates and builds with the SAM CLI, as its developer would find it on a fresh clone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tasklane.local.postgres import free_port

from tests.conftest import wait_for
from tests.integration.devstack import clean_environment, http

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="tasklane-init-"))
    parent.chmod(0o755)  # as root, its Postgres runs as the postgres user, who must reach it
    target = parent / "shop"
    done = subprocess.run(
        [sys.executable, "-m", "tasklane.cli", "init", str(target)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "created" in done.stdout
    yield target
    shutil.rmtree(parent, ignore_errors=True)


def run(app: Path, *cmd: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=app,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_environment() | {"PYTHONPATH": ""} | env,
    )


@pytest.mark.slow
def test_a_new_application_has_the_layout_and_its_own_tasks(app):
    for path in (
        "template.yaml",
        "samconfig.toml",
        "functions/consumer/app.py",
        "events",
        "layers/tasklane/tasklane/executor.py",
        "layers/app/shop/tasks.py",
        "tests/test_tasks.py",
        "README.md",
        "Makefile",
        "Dockerfile",
    ):
        assert (app / path).exists(), path
    assert "Default: shop.tasks" in (app / "template.yaml").read_text()
    assert not (app / "layers" / "tasklane" / "tasklane" / "local").exists()  # dev/ has it
    assert "shop.greet" in (app / "events" / "producer-submit.json").read_text()


@pytest.mark.slow
def test_a_new_application_passes_its_own_tests(app):
    """Its tests use tasklane's pytest plugin: eagerly, and through the real lanes."""
    result = run(app, "make", "test")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "4 passed" in result.stdout


@pytest.mark.slow
def test_a_new_application_runs_with_tasklane_dev(app):
    if not (app / ".venv" / "bin" / "tasklane").exists():
        assert run(app, "scripts/bootstrap").returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [
            str(app / ".venv" / "bin" / "tasklane"),
            "--data-dir",
            str(app / ".tasklane"),
            "dev",
            "--port",
            str(port),
            "--postgres-port",
            str(free_port()),
        ],
        cwd=app,
        env=clean_environment() | {"PYTHONPATH": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        wait_for(lambda: any("Ctrl-C stops everything" in line for line in lines), 120, what="up")
        banner = "".join(lines)
        assert "shop.greet" in banner and "tasklane submit shop." in banner  # its own tasks
        assert "text.wordcount" not in banner  # not examples it does not have
        api = f"http://127.0.0.1:{port}"
        ids = []
        for task, payload in (("shop.greet", {"name": "dev"}), ("shop.checksum", {"data": "x"})):
            status, body = http("POST", f"{api}/tasks", {"task": task, "payload": payload})
            assert status == 202, body
            ids.append(body["id"])
        for task_id in ids:
            task = wait_for(
                lambda t=task_id: (
                    (r := http("GET", f"{api}/tasks/{t}")[1])["status"] in ("succeeded", "failed")
                    and r
                ),
                60,
                what="the task",
            )
            assert task["status"] == "succeeded", task
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        print("".join(lines[-200:]))
    assert process.returncode is not None


@pytest.mark.sam
@pytest.mark.slow
def test_a_new_application_validates_and_builds_with_sam(app, tmp_path):
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    if not sam.exists():
        pytest.skip("the SAM CLI is not installed (scripts/bootstrap --sam)")
    env = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    if shutil.which("pyenv"):
        env["PYENV_VERSION"] = "3.11.7:3.12.1:3.13.0"
    lint = run(app, str(sam), "validate", "--lint", "--region", "us-east-1", **env)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    build = run(app, str(sam), "build", "--build-dir", str(tmp_path / "build"), **env)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert (tmp_path / "build" / "AppLayer" / "python" / "shop" / "tasks.py").exists()
    assert (tmp_path / "build" / "CoreLayer" / "python" / "tasklane" / "executor.py").exists()
