"""Fixtures: real Postgres (a throwaway cluster), moto's SQS server over HTTP, real workers.

The parts are started by tasklane's own pytest plugin (tasklane.testing), as an application's
tests start them; the names below are this suite's shorthand for its fixtures. Nothing here
mocks the parts tasklane talks to; only AWS itself is stood in for, by moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tasklane.testing import MAX_RECEIVES, VISIBILITY, Stack, queue_specs, wait_for

from tests.processes import Worker

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
TASK_MODULES = "tasklane.examples,tests.tasks"  # as pyproject.toml's tasklane_task_modules

__all__ = [
    "MAX_RECEIVES",
    "ROOT",
    "TASK_MODULES",
    "VISIBILITY",
    "Worker",
    "queue_specs",
    "wait_for",
]


@pytest.fixture(scope="session")
def pg_cluster(tasklane_postgres_cluster: Any) -> Any:
    """The throwaway cluster (None when $TEST_DATABASE_URL names a server instead)."""
    return tasklane_postgres_cluster


@pytest.fixture(scope="session")
def postgres(tasklane_postgres: str) -> str:
    return tasklane_postgres


@pytest.fixture(scope="session")
def moto(tasklane_moto: Any) -> Any:
    return tasklane_moto


@pytest.fixture(scope="session")
def base_env(tasklane_env: dict[str, str]) -> dict[str, str]:
    return tasklane_env


@pytest.fixture
def stack(tasklane_stack: Stack) -> Stack:
    return tasklane_stack


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


@pytest.fixture
def fresh_database(pg_cluster: Any) -> Iterator[Any]:
    """An engine on an empty database of its own (not migrated)."""
    import uuid

    from sqlalchemy import create_engine

    if pg_cluster is None:
        pytest.skip("needs the throwaway cluster (TEST_DATABASE_URL names a shared server)")
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    engine = create_engine(pg_cluster.url(name))
    yield engine
    engine.dispose()
