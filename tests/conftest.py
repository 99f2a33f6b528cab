"""Fixtures: real Postgres (a throwaway cluster), moto's SQS server over HTTP, real workers.

Nothing here mocks the parts tasklane talks to; only AWS itself is stood in for, by moto.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from sqlalchemy import create_engine, text
from tasklane import broker, database, migrate, service
from tasklane.config import settings
from tasklane.local.postgres import LocalPostgres, free_port
from tasklane.local.sqs import FAKE_CREDENTIALS, MotoServer, QueueSpec, create_queues

from tests.processes import Worker

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
TASK_MODULES = "tasklane.examples,tests.tasks"
VISIBILITY = 2  # seconds: failed attempts come back quickly in tests
MAX_RECEIVES = 3


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalPostgres | None]:
    """A throwaway local cluster (None when $TEST_DATABASE_URL names a server instead)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    data = Path(tempfile.mkdtemp(prefix="tasklane-test-pg-"))
    cluster = LocalPostgres(data, free_port(), durable=False).start()
    cluster.create_database("tasklane_test")
    yield cluster
    cluster.stop(mode="immediate")
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(pg_cluster: LocalPostgres | None) -> str:
    """The test database's URL."""
    return os.environ.get("TEST_DATABASE_URL") or pg_cluster.url("tasklane_test")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_env(postgres: str, moto: MotoServer) -> Iterator[dict[str, str]]:
    env = FAKE_CREDENTIALS | {
        "DATABASE_URL": postgres,
        "AWS_ENDPOINT_URL_SQS": moto.endpoint,
        "TASK_MODULES": TASK_MODULES,
        "POWERTOOLS_SERVICE_NAME": "tasklane-test",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _refresh()
    engine = create_engine(postgres)
    with engine.begin() as conn:
        migrate.upgrade(conn)
    engine.dispose()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _refresh()


def _refresh() -> None:
    """Forget what was read from the environment (settings, engine, clients)."""
    settings.cache_clear()
    database.reset()
    service.default_store.cache_clear()
    broker.sqs.cache_clear()


@dataclass
class Stack:
    """One test's pipeline: fresh queues, an empty tasks table, the environment pointing at them."""

    env: dict[str, str]
    urls: dict[str, str]
    moto: MotoServer
    sqs: object

    @property
    def lambda_queue(self) -> str:
        return self.urls["LambdaQueue"]

    @property
    def celery_queue(self) -> str:
        return self.urls["CeleryQueue"]

    @property
    def lambda_dlq(self) -> str:
        return self.urls["LambdaDeadLetterQueue"]

    @property
    def celery_dlq(self) -> str:
        return self.urls["CeleryDeadLetterQueue"]

    def receive(self, url: str, wait: float = 0, max_messages: int = 10) -> list[dict]:
        return self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=int(wait),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def depth(self, url: str) -> int:
        """Messages in a queue: visible, in flight, or delayed."""
        kinds = ("", "NotVisible", "Delayed")
        names = [f"ApproximateNumberOfMessages{kind}" for kind in kinds]
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attrs[name]) for name in names)

    def query(self, sql: str, **params: object) -> list:
        engine = database.engine()
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))


def queue_specs(prefix: str = "tl", max_receives: int = MAX_RECEIVES) -> list[QueueSpec]:
    visibility = {"VisibilityTimeout": str(VISIBILITY)}
    return [
        QueueSpec("LambdaDeadLetterQueue", f"{prefix}-lambda-dlq"),
        QueueSpec("CeleryDeadLetterQueue", f"{prefix}-celery-dlq"),
        QueueSpec(
            "LambdaQueue", f"{prefix}-lambda", visibility, "LambdaDeadLetterQueue", max_receives
        ),
        QueueSpec(
            "CeleryQueue", f"{prefix}-celery", visibility, "CeleryDeadLetterQueue", max_receives
        ),
    ]


@pytest.fixture
def stack(base_env: dict[str, str], moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Stack:
    moto.reset()
    client = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1")
    urls = create_queues(client, queue_specs())
    env = dict(base_env) | {
        "LAMBDA_QUEUE_URL": urls["LambdaQueue"],
        "CELERY_QUEUE_URL": urls["CeleryQueue"],
        "LAMBDA_DLQ_URL": urls["LambdaDeadLetterQueue"],
        "CELERY_DLQ_URL": urls["CeleryDeadLetterQueue"],
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    with database.engine().begin() as conn:
        conn.execute(text("TRUNCATE tasks"))
    return Stack(env, urls, moto, client)


@pytest.fixture
def vectors() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(VECTORS.glob("celery-*.json"))}


@pytest.fixture
def celery_worker(stack: Stack) -> Iterator[Worker]:
    worker = Worker(
        stack.env, stack.celery_queue.rsplit("/", 1)[-1], "--pool", "prefork", "--concurrency", "2"
    )
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()
        print("\n--- celery worker output ---\n" + "\n".join(worker.lines[-80:]))


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
