"""Existing Celery tasks, claim-checked with one line (tests/celery_app): their code and their
callers unchanged, their arguments in Postgres, run by the project's own worker and by the
lambda lane, results through Celery's AsyncResult."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from tasklane import TasklaneError

from tests.conftest import wait_for
from tests.integration.helpers import consumer_source

BIG = "x" * (3 * 1024 * 1024)


def test_a_task_called_directly_is_still_its_function(project):
    assert project.add(2, 3) == 5
    assert project.shout("hi", punctuation="?") == "HI?"


def test_delay_stores_the_arguments_and_sends_only_an_id(stack, project):
    result = project.add.delay(2, 3)
    (message,) = stack.receive(stack.celery_queue)
    assert len(message["Body"]) < 2048 and "2, 3" not in message["Body"]
    (row,) = stack.query("SELECT task, lane, payload FROM tasks")
    assert (row.task, row.lane) == ("tests.celery_app.tasks.add", "celery")
    assert row.payload == {"args": [2, 3], "kwargs": {}}
    assert result.id == str(uuid.UUID(result.id)) and result.state == "PENDING"


def test_arguments_that_are_not_json_fail_at_the_call_site(stack, project):
    with pytest.raises(TasklaneError, match="must be JSON"):
        project.add.delay(object(), 1)
    assert stack.query("SELECT count(*) FROM tasks")[0][0] == 0


def test_the_projects_own_worker_runs_them_with_megabytes_of_arguments(
    stack, project, project_worker, tmp_path
):
    since = datetime(2026, 1, 2, tzinfo=UTC)
    assert project.add.delay(2, 3).get(timeout=60) == 5
    measured = project.measure.apply_async((BIG,), {"repeat": 2, "since": since})
    assert measured.get(timeout=60) == {
        "chars": 2 * len(BIG),
        "since_type": "datetime",
        "since_year": 2026,
    }
    flaky = project.flaky.delay(str(tmp_path / "runs"))
    assert flaky.get(timeout=60) == 2  # self.retry(): its run failed, SQS delivered it again
    (row,) = stack.query("SELECT attempts FROM tasks WHERE id = :id", id=uuid.UUID(flaky.id))
    assert row.attempts == 2


def test_the_lambda_lane_runs_them_too(stack, project):
    result = project.shout.delay("claim check", punctuation="!!")
    assert stack.depth(stack.lambda_queue) == 1
    big = project.measure.apply_async((BIG,))
    wait_for(lambda: consumer_source(stack).poll_once(), 20, what="the lambda lane")
    assert result.get(timeout=5) == "CLAIM CHECK!!"
    assert big.state == "PENDING"  # a celery-lane task: it waits for a worker
