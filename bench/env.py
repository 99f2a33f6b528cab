"""The benchmarks' environment: Postgres, moto's SQS server and the queues, set up once."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from tasklane import broker, database, migrate
from tasklane.config import settings
from tasklane.local.postgres import LocalPostgres, free_port
from tasklane.local.sqs import FAKE_CREDENTIALS, MotoServer, QueueSpec, create_queues
from tasklane.store import default_store

ROOT = Path(__file__).resolve().parents[1]
TASK_MODULES = "bench.tasks"


def queue_specs() -> list[QueueSpec]:
    return [
        QueueSpec("LambdaDeadLetterQueue", "bench-lambda-dlq"),
        QueueSpec("CeleryDeadLetterQueue", "bench-celery-dlq"),
        QueueSpec(
            "LambdaQueue", "bench-lambda", {"VisibilityTimeout": "30"}, "LambdaDeadLetterQueue", 5
        ),
        QueueSpec(
            "CeleryQueue", "bench-celery", {"VisibilityTimeout": "30"}, "CeleryDeadLetterQueue", 5
        ),
        QueueSpec(
            "LambdaHighQueue",
            "bench-lambda-high",
            {"VisibilityTimeout": "30"},
            "LambdaDeadLetterQueue",
            5,
        ),
        QueueSpec(
            "CeleryHighQueue",
            "bench-celery-high",
            {"VisibilityTimeout": "30"},
            "CeleryDeadLetterQueue",
            5,
        ),
    ]


@dataclass
class BenchEnv:
    """What a measurement needs: the settings' environment, the queues, an SQS client."""

    env: dict[str, str]
    moto_endpoint: str
    reset_moto: Callable[[], None]
    urls: dict[str, str] = field(default_factory=dict)
    quick: bool = False

    @property
    def sqs(self) -> Any:
        return broker.sqs()

    def reset_queues(self) -> None:
        """Fresh, empty queues (moto slows down as a queue fills) and an empty tasks table."""
        from sqlalchemy import text

        self.reset_moto()
        client = boto3.client("sqs", endpoint_url=self.moto_endpoint, region_name="us-east-1")
        self.urls = create_queues(client, queue_specs())
        self.env |= {
            "LAMBDA_QUEUE_URL": self.urls["LambdaQueue"],
            "CELERY_QUEUE_URL": self.urls["CeleryQueue"],
            "LAMBDA_HIGH_QUEUE_URL": self.urls["LambdaHighQueue"],
            "CELERY_HIGH_QUEUE_URL": self.urls["CeleryHighQueue"],
            "LAMBDA_DLQ_URL": self.urls["LambdaDeadLetterQueue"],
            "CELERY_DLQ_URL": self.urls["CeleryDeadLetterQueue"],
        }
        os.environ.update(self.env)
        settings.cache_clear()
        with database.engine().begin() as conn:
            conn.execute(text("TRUNCATE tasks, workflows"))

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


@contextmanager
def standalone(quick: bool = False, stock_moto: bool = False) -> Iterator[BenchEnv]:
    """A throwaway Postgres cluster and moto server for a benchmark run (see bench/moto_server.py
    for what ``stock_moto`` turns off)."""
    data = Path(tempfile.mkdtemp(prefix="tasklane-bench-"))
    data.chmod(0o755)
    cluster = LocalPostgres(data / "pg", free_port(), durable=False).start()
    cluster.create_database("bench")
    moto = MotoServer(free_port())
    if not stock_moto:
        moto.program = (sys.executable, str(ROOT / "bench" / "moto_server.py"))
    moto.start()
    env = FAKE_CREDENTIALS | {
        "DATABASE_URL": cluster.url("bench"),
        "AWS_ENDPOINT_URL_SQS": moto.endpoint,
        "TASK_MODULES": TASK_MODULES,
        "PYTHONPATH": str(ROOT),
        "API_AUTHORIZATION": "NONE",  # the API called in-process, as the local stack has it
    }
    os.environ.update(env)
    settings.cache_clear()
    database.reset()
    default_store.cache_clear()
    broker.sqs.cache_clear()
    try:
        migrate.upgrade(database.engine())
        bench = BenchEnv(env, moto.endpoint, moto.reset, quick=quick)
        bench.reset_queues()
        yield bench
    finally:
        moto.stop()
        cluster.stop(mode="immediate")
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class Stack:
    """A running ``tasklane dev``: its API, and its state directory for the CLI's commands."""

    api: str
    data_dir: Path

    def http(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.api + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "tasklane.cli", "--data-dir", str(self.data_dir), *args],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )


@contextmanager
def local_stack() -> Iterator[Stack]:
    """``tasklane dev`` on the benchmark's Postgres and moto server, with its own queues (made
    from template.yaml) and the benchmark's tasks."""
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="tasklane-bench-stack-"))
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
            f"TaskModules={TASK_MODULES}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert stack.stdout is not None
        for line in stack.stdout:
            if "local stack is up" in line:
                break
        else:
            raise RuntimeError("tasklane dev did not start")
        subprocess.Popen(["cat"], stdin=stack.stdout, stdout=subprocess.DEVNULL)  # keep it drained
        yield Stack(f"http://127.0.0.1:{port}", state)
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
