"""Fixtures of the integration tests: the tests' Celery project (tests/celery_app), adopted with one
line, and its own worker."""

from __future__ import annotations

import pytest
from tasklane import registry
from tasklane.config import settings

from tests.processes import Worker


@pytest.fixture
def project(stack, monkeypatch):
    """The project's task module among TASK_MODULES, as its deployment would list it."""
    monkeypatch.setenv("TASK_MODULES", f"{stack.env['TASK_MODULES']},tests.celery_app.tasks")
    settings.cache_clear()
    registry.load_configured()
    from tests.celery_app import tasks

    return tasks


@pytest.fixture
def project_worker(stack, project):
    worker = Worker(
        stack.env | {"TASK_MODULES": "tests.celery_app.tasks"},
        stack.celery_queue.rsplit("/", 1)[-1],
        "--concurrency",
        "2",
        app="tests.celery_app",
    )
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()
