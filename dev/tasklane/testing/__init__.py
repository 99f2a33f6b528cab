"""Testing helpers: a pytest plugin (loaded by the ``pytest11`` entry point wherever tasklane is
installed), as Celery's ``celery.contrib.pytest`` and Oban's testing modules are for theirs.

Two ways to test tasks, both through the real executor, so an outcome is recorded exactly as in
production:

- **End to end** (``tasklane_stack``): the real parts, started once per session: a throwaway
  Postgres cluster (or ``$TEST_DATABASE_URL``), moto's SQS server, the schema; per test, fresh
  queues and an empty task table. ``.delay()`` then ``stack.run_lambda_lane()`` (the consumer
  function, in-process, through the emulated event source) or ``stack.celery_worker()`` (a
  real ``celery worker`` process), and ``.get()``::

      def test_greet(tasklane_stack):
          handle = greet.delay({"name": "Ada"})
          tasklane_stack.run_lambda_lane()
          assert handle.get(timeout=5) == {"greeting": "hello, Ada"}

- **Eager** (``tasklane_eager``, or ``with tasklane.testing.eager():``): a submitted task runs
  inline, in the test's process, as soon as it would have been sent; only Postgres is needed::

      def test_greet_now(tasklane_eager):
          assert greet.delay({"name": "Ada"}).get(timeout=1) == {"greeting": "hello, Ada"}

The task modules come from ``$TASK_MODULES``, or the ini option ``tasklane_task_modules``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Short queue timeouts, so a failed attempt comes back within a test.
VISIBILITY = 2
MAX_RECEIVES = 3
QUEUES = ("LambdaQueue", "CeleryQueue", "LambdaDeadLetterQueue", "CeleryDeadLetterQueue")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "tasklane_task_modules",
        "comma-separated task modules for the tasklane fixtures (default: $TASK_MODULES)",
        default="",
    )


# ------------------------------------------------------------------------------ helpers
def wait_for(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "it"
) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def queue_specs(prefix: str = "tl", max_receives: int = MAX_RECEIVES) -> list:
    """The template's queues, with short timeouts: each lane's queue, its high-priority queue
    and its DLQ."""
    from tasklane.local.sqs import QueueSpec

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
        QueueSpec(
            "LambdaHighQueue",
            f"{prefix}-lambda-high",
            visibility,
            "LambdaDeadLetterQueue",
            max_receives,
        ),
        QueueSpec(
            "CeleryHighQueue",
            f"{prefix}-celery-high",
            visibility,
            "CeleryDeadLetterQueue",
            max_receives,
        ),
    ]


def refresh() -> None:
    """Forget what was read from the environment (settings, engine, clients, the registry's
    loaded modules stay loaded)."""
    from tasklane import broker, database
    from tasklane.config import settings
    from tasklane.store import default_store

    settings.cache_clear()
    database.reset()
    default_store.cache_clear()
    broker.sqs.cache_clear()


class Worker:
    """A real ``celery -A <app> worker`` process; its output is kept for assertions."""

    def __init__(
        self,
        env: dict[str, str],
        queue: str,
        *extra: str,
        app: str = "tasklane.worker",
        cwd: Path | None = None,
    ) -> None:
        self.lines: list[str] = []
        path = [os.getcwd(), os.environ.get("PYTHONPATH", "")]  # the project's own modules
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue),
                *("--loglevel", "INFO", "--without-mingle", "--without-gossip"),
                "--without-heartbeat",
                *extra,
            ],
            cwd=cwd,
            env=os.environ
            | {"PYTHONPATH": os.pathsep.join(filter(None, path))}
            | env
            | {"PYTHONUNBUFFERED": "1"},
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


@dataclass
class Stack:
    """One test's pipeline: fresh queues, an empty task table, the environment pointing at
    them; and the lanes, to run what the test submits."""

    env: dict[str, str]
    urls: dict[str, str]
    moto: Any
    sqs: Any
    workers: list[Worker] = field(default_factory=list)

    @property
    def lambda_queue(self) -> str:
        return self.urls["LambdaQueue"]

    @property
    def celery_queue(self) -> str:
        return self.urls["CeleryQueue"]

    @property
    def lambda_high_queue(self) -> str:
        return self.urls["LambdaHighQueue"]

    @property
    def celery_high_queue(self) -> str:
        return self.urls["CeleryHighQueue"]

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
        names = [f"ApproximateNumberOfMessages{k}" for k in ("", "NotVisible", "Delayed")]
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attrs[name]) for name in names)

    def query(self, sql: str, **params: object) -> list:
        from sqlalchemy import text
        from tasklane import database

        with database.engine().connect() as conn:
            return list(conn.execute(text(sql), params))

    def lambda_lane(
        self, function: str = "consumer", timeout: float = 30, *, high: bool = False
    ) -> Any:
        """The lambda lane's event source, calling tasklane's consumer in this process (of its
        high-priority queue with ``high``)."""
        from tasklane import consumer
        from tasklane.local.eventsource import queue_source

        url = self.lambda_high_queue if high else self.lambda_queue
        return queue_source(self.sqs, url, consumer.handle, function, timeout)

    def run_lambda_lane(self, polls: int = 10) -> int:
        """Poll the lambda lane until its queues have nothing to offer (its high-priority
        queue first); the records deleted."""
        deleted = 0
        for source in (self.lambda_lane(high=True), self.lambda_lane()):
            for _ in range(polls):
                result = source.poll_once()
                if not result:
                    break
                deleted += result.deleted
        return deleted

    def celery_worker(self, *extra: str, app: str = "tasklane.worker") -> Worker:
        """A real Celery worker on the celery lane's queues (stopped after the test)."""
        queue = ",".join(u.rsplit("/", 1)[-1] for u in (self.celery_high_queue, self.celery_queue))
        worker = Worker(self.env, queue, *(extra or ("--concurrency", "2")), app=app)
        self.workers.append(worker)
        return worker.wait_ready()

    def reconcile(self) -> list:
        from tasklane import reconciler

        return reconciler.reconcile()


# ------------------------------------------------------------------------------ eager mode
@contextlib.contextmanager
def eager(propagate: bool = False) -> Iterator[None]:
    """Run every task submitted in this block inline, through the executor, instead of
    sending its message (a ``scheduled`` one waits, as it would). One attempt: a failure
    ends the task ``failed``; with ``propagate`` the ``.delay()`` raises ``TaskFailed``."""
    from tasklane.eager import eager as inline

    with inline(propagate):
        yield


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def tasklane_postgres_cluster() -> Iterator[Any]:
    """A throwaway local cluster (None when ``$TEST_DATABASE_URL`` names a server instead)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    from tasklane.local.postgres import LocalPostgres, free_port

    data = Path(tempfile.mkdtemp(prefix="tasklane-test-pg-"))
    cluster = LocalPostgres(data, free_port(), durable=False).start()
    cluster.create_database("tasklane_test")
    yield cluster
    cluster.stop(mode="immediate")
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def tasklane_postgres(tasklane_postgres_cluster: Any) -> str:
    """The test database's URL."""
    return os.environ.get("TEST_DATABASE_URL") or tasklane_postgres_cluster.url("tasklane_test")


@pytest.fixture(scope="session")
def tasklane_moto() -> Iterator[Any]:
    """moto's SQS server, over HTTP."""
    from tasklane.local.postgres import free_port
    from tasklane.local.sqs import MotoServer

    server = MotoServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tasklane_database(request: pytest.FixtureRequest, tasklane_postgres: str) -> Iterator[str]:
    """The test database, migrated, named by ``DATABASE_URL`` for the session."""
    from sqlalchemy import create_engine
    from tasklane import migrate
    from tasklane.local.sqs import FAKE_CREDENTIALS

    modules = request.config.getini("tasklane_task_modules") or os.environ.get("TASK_MODULES")
    # the API called in-process has no authorizer in front: one local operator, as in
    # `tasklane dev`, for the whole session (a test that sets identities sets it itself)
    env = FAKE_CREDENTIALS | {"DATABASE_URL": tasklane_postgres, "API_AUTHORIZATION": "NONE"}
    if modules:
        env["TASK_MODULES"] = modules
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    refresh()
    engine = create_engine(tasklane_postgres)
    migrate.upgrade(engine)
    engine.dispose()
    yield tasklane_postgres
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    refresh()


@pytest.fixture(scope="session")
def tasklane_env(tasklane_database: str, tasklane_moto: Any) -> Iterator[dict[str, str]]:
    """The session's environment: the database and moto's endpoint (the queues are a test's)."""
    from tasklane.local.sqs import FAKE_CREDENTIALS

    saved = os.environ.get("AWS_ENDPOINT_URL_SQS")
    os.environ["AWS_ENDPOINT_URL_SQS"] = tasklane_moto.endpoint
    refresh()
    env = FAKE_CREDENTIALS | {
        "DATABASE_URL": tasklane_database,
        "AWS_ENDPOINT_URL_SQS": tasklane_moto.endpoint,
        # the API called in-process has no authorizer in front: one local operator, as in
        # `tasklane dev`; a test that sets identities sets API_AUTHORIZATION itself
        "API_AUTHORIZATION": "NONE",
    }
    if os.environ.get("TASK_MODULES"):
        env["TASK_MODULES"] = os.environ["TASK_MODULES"]
    yield env
    if saved is None:
        os.environ.pop("AWS_ENDPOINT_URL_SQS", None)
    else:
        os.environ["AWS_ENDPOINT_URL_SQS"] = saved
    refresh()


def _empty_tables() -> None:
    from sqlalchemy import text
    from tasklane import database

    with database.engine().begin() as conn:
        conn.execute(
            text(
                "TRUNCATE tasks, workflows, idempotency_keys, celery_groups, "
                "celery_chord_parts, rate_buckets"
            )
        )


@pytest.fixture
def tasklane_stack(
    tasklane_env: dict[str, str], tasklane_moto: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """Fresh queues, an empty task table, and the environment pointing at them."""
    import boto3
    from tasklane.config import settings
    from tasklane.local.sqs import create_queues

    tasklane_moto.reset()
    client = boto3.client("sqs", endpoint_url=tasklane_moto.endpoint, region_name="us-east-1")
    urls = create_queues(client, queue_specs())
    env = dict(tasklane_env) | {
        "LAMBDA_QUEUE_URL": urls["LambdaQueue"],
        "CELERY_QUEUE_URL": urls["CeleryQueue"],
        "LAMBDA_HIGH_QUEUE_URL": urls["LambdaHighQueue"],
        "CELERY_HIGH_QUEUE_URL": urls["CeleryHighQueue"],
        "LAMBDA_DLQ_URL": urls["LambdaDeadLetterQueue"],
        "CELERY_DLQ_URL": urls["CeleryDeadLetterQueue"],
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    _empty_tables()
    stack = Stack(env, urls, tasklane_moto, client)
    yield stack
    for worker in stack.workers:
        worker.stop()


@pytest.fixture
def tasklane_eager(tasklane_database: str) -> Iterator[None]:
    """Eager mode on a real, empty task table: ``.delay()`` runs the task inline."""
    _empty_tables()
    with eager():
        yield
