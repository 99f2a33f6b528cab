"""6. End to end on the local stack (``tasklane dev``): submit → succeeded, p50/p99 for each lane,
split by stage: API (the POST), queue wait (row created → claimed), run + store (claimed →
result stored), and the total as a client sees it (POST sent → GET shows succeeded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sqlalchemy import text
from tasklane import database
from tasklane.local.postgres import free_port

from bench.env import ROOT, BenchEnv, percentile


def _http(method: str, url: str, body=None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run(bench: BenchEnv) -> dict:
    n = bench.n(40, 3)
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="tasklane-bench-e2e-"))
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_QUEUE_URL", "_DLQ_URL"))}
    stack = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasklane.cli",
            "--data-dir",
            str(state),
            "dev",
            "--port",
            str(port),
            "--parameter-overrides",
            "TaskModules=bench.tasks",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        assert stack.stdout is not None
        for line in stack.stdout:
            if "local stack is up" in line:
                break
        else:
            raise RuntimeError("tasklane dev did not start")
        subprocess.Popen(["cat"], stdin=stack.stdout, stdout=subprocess.DEVNULL)  # keep it drained
        figures: dict[str, float] = {}
        for lane, task in (("lambda", "bench.noop"), ("celery", "bench.noop_celery")):
            totals, apis, waits, runs = [], [], [], []
            for i in range(n):
                start = time.perf_counter()
                created = _http("POST", f"{api}/tasks", {"task": task, "payload": i})
                apis.append(time.perf_counter() - start)
                while _http("GET", f"{api}/tasks/{created['id']}")["status"] != "succeeded":
                    time.sleep(0.01)
                totals.append(time.perf_counter() - start)
                with database.engine().connect() as conn:
                    row = conn.execute(
                        text(
                            "SELECT extract(epoch FROM started_at - created_at) AS wait, "
                            "extract(epoch FROM finished_at - started_at) AS run FROM tasks "
                            "WHERE id = :id"
                        ),
                        {"id": created["id"]},
                    ).one()
                waits.append(float(row.wait))
                runs.append(float(row.run))
            for label, values in (
                ("total", totals),
                ("API", apis),
                ("queue wait", waits),
                ("run+store", runs),
            ):
                figures[f"{lane} {label} p50 ms"] = percentile(values, 50) * 1000
                figures[f"{lane} {label} p99 ms"] = percentile(values, 99) * 1000
        return {
            "name": "end to end (local stack)",
            "workload": f"{n} sequential tasks per lane, trivial task, polling GET every 10 ms",
            "figures": figures,
            "targets": {},
        }
    finally:
        os.killpg(stack.pid, 2)  # Ctrl-C
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, 9)
