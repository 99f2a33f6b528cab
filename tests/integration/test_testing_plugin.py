"""tasklane.testing, as an application's tests use it: its fixtures by their own names."""

from __future__ import annotations

import pytest
from tasklane import TaskFailed, TaskHandle, testing

from tests import tasks


# --8<-- [start:usage]
def test_eager_runs_a_submitted_task_inline_and_records_it(tasklane_eager):
    handle = tasks.echo.delay({"eager": True})
    assert handle.status() == "succeeded"  # already: no queue, no consumer
    assert handle.get(timeout=0) == {"echo": {"eager": True}}
    record = handle.record()
    assert record.attempts == 1 and record.created_at <= record.updated_at


# --8<-- [end:usage]


def test_eager_records_a_failure_and_get_raises_it(tasklane_eager):
    handle = tasks.fail_twice.delay({})  # max_attempts=2, but eager runs one attempt: failed
    record = handle.record()
    assert (record.status, record.attempts, record.error["type"]) == ("failed", 1, "RuntimeError")
    with pytest.raises(TaskFailed) as failed:
        handle.get(timeout=0)
    assert failed.value.type == "RuntimeError" and "fail_twice" in failed.value.traceback


# --8<-- [start:propagate]
def test_a_failure_path_with_eager_propagation(tasklane_database):
    with testing.eager(propagate=True), pytest.raises(TaskFailed) as failed:
        tasks.fail.delay({"why": "bad input"})  # as Celery's task_eager_propagates
    assert failed.value.message == "always fails: bad input"


# --8<-- [end:propagate]


def test_eager_mode_is_a_context_manager_too(tasklane_database):
    with testing.eager():
        handle = tasks.spawn.delay({"children": ["a"]})  # its child runs inline as well
    (child,) = handle.get(timeout=0)
    from uuid import UUID

    assert TaskHandle(UUID(child)).get(timeout=0) == {"echo": "a"}


# --8<-- [start:stack]
def test_the_stack_runs_the_lanes_end_to_end(tasklane_stack):
    handle = tasks.echo.delay("through SQS")
    assert tasklane_stack.depth(tasklane_stack.lambda_queue) == 1
    assert tasklane_stack.run_lambda_lane() == 1
    assert handle.get(timeout=5) == {"echo": "through SQS"}
    tasklane_stack.celery_worker()
    assert tasks.echo_celery.delay(1).get(timeout=60)["echo"] == 1


# --8<-- [end:stack]
