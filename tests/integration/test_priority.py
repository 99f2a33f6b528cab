"""Priorities (tasklane.lanes): a task of priority 5 to 9 goes by its lane's high-priority
queue, which has consumers of its own (the lambda lane's event source, the Celery workers'
second queue), so it is taken ahead of the lane's backlog. On Postgres and moto's SQS, with
the lambda lane's consumer and a real Celery worker."""

from __future__ import annotations

import time

import pytest
from tasklane import registry, sending, submit, submit_many
from tasklane.errors import ConfigurationError, InvalidRequest
from tasklane.registry import task

from tests.integration.helpers import call_api


def test_a_high_priority_task_is_taken_ahead_of_the_lanes_backlog(stack):
    backlog = submit_many([("test.echo", {"n": n}) for n in range(30)])
    urgent = submit("test.echo", {"n": "urgent"}, priority=9)
    assert stack.depth(stack.lambda_queue) == 30 and stack.depth(stack.lambda_high_queue) == 1
    # the high queue's event source runs it while the lane's own still holds all 30
    assert stack.lambda_lane(high=True).poll_once().deleted == 1
    assert urgent.status() == "succeeded"
    assert {h.status() for h in backlog} == {"queued"}
    assert stack.depth(stack.lambda_queue) == 30
    status, _, shown = call_api("GET", f"/tasks/{urgent.id}")
    assert status == 200 and shown["priority"] == 9
    assert call_api("GET", f"/tasks/{backlog[0].id}")[2]["priority"] == 0


def test_priority_four_stays_in_the_lanes_queue_and_five_goes_high(stack):
    submit("test.echo", {}, priority=4)
    submit("test.echo", {}, priority=5)
    assert stack.depth(stack.lambda_queue) == 1 and stack.depth(stack.lambda_high_queue) == 1


def test_a_tasks_declared_priority_applies_unless_the_call_gives_one(stack):
    assert registry.get("test.urgent").priority == 7
    declared = submit("test.urgent", {})
    assert stack.depth(stack.lambda_high_queue) == 1 and stack.depth(stack.lambda_queue) == 0
    overridden = submit("test.urgent", {}, priority=0)
    assert stack.depth(stack.lambda_queue) == 1
    status, _, answer = call_api("POST", "/tasks", {"task": "test.urgent", "payload": {}})
    assert status == 202 and call_api("GET", f"/tasks/{answer['id']}")[2]["priority"] == 7
    assert stack.depth(stack.lambda_high_queue) == 2
    rows = dict(stack.query("SELECT id, priority FROM tasks"))
    assert rows[declared.id] == 7 and rows[overridden.id] is None


def test_every_later_send_goes_by_the_same_queue(stack):
    """A fresh message (the reconciler's resend of a lost one, a deferral) keeps the task's
    priority: it is read from the row."""
    urgent = submit("test.echo", {}, priority=8)
    stack.receive(stack.lambda_high_queue)  # taken, then lost
    assert sending.resend(urgent.id, 0)
    assert stack.depth(stack.lambda_high_queue) == 2 and stack.depth(stack.lambda_queue) == 0


def test_a_batch_sends_each_task_by_its_own_priority(stack):
    status, _, answer = call_api(
        "POST",
        "/tasks/batch",
        {
            "tasks": [
                {"task": "test.echo", "payload": 1},
                {"task": "test.echo", "payload": 2, "priority": 6},
                {"task": "test.echo", "payload": 3},
            ]
        },
    )
    assert status == 202, answer
    assert stack.depth(stack.lambda_queue) == 2 and stack.depth(stack.lambda_high_queue) == 1


@pytest.mark.parametrize("priority", [10, -1, "5", True, 1.5, None])
def test_a_priority_out_of_range_is_400_and_stores_nothing(stack, priority):
    body = {"task": "test.echo", "payload": {}, "priority": priority}
    status, _, answer = call_api("POST", "/tasks", body)
    if priority is None:  # null: the task's own
        assert status == 202
        return
    assert status == 400, answer
    assert "priority" in answer["error"]["message"]
    assert stack.query("SELECT count(*) FROM tasks")[0][0] == 0


def test_a_bad_priority_is_refused_in_python_at_the_call_and_at_definition(stack):
    with pytest.raises(InvalidRequest, match="priority must be a whole number from 0 to 9"):
        submit("test.echo", {}, priority=11)
    with pytest.raises(ConfigurationError, match=r"test\.bad_priority.*from 0 to 9"):
        task("test.bad_priority", priority=12)(lambda payload: payload)
    assert stack.query("SELECT count(*) FROM tasks")[0][0] == 0


def test_a_celery_worker_takes_high_priority_tasks_ahead_of_its_backlog(stack):
    """A worker consumes the lane's high queue and its own queue in turn: a high-priority task
    submitted behind a backlog starts after a few of it, not after all of it."""
    backlog = submit_many([("test.sleep_celery", {"seconds": 0.2}) for _ in range(20)])
    urgent = submit("test.echo_celery", {"n": "urgent"}, priority=9)
    worker = stack.celery_worker("--pool", "solo")
    deadline = time.monotonic() + 30
    while urgent.status() != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert urgent.status() == "succeeded", "\n".join(worker.lines[-40:])
    (started_at,) = stack.query("SELECT started_at FROM tasks WHERE id = :id", id=urgent.id)[0]
    (after,) = stack.query(
        "SELECT count(*) FROM tasks WHERE task = 'test.sleep_celery' "
        "AND (started_at IS NULL OR started_at > :t)",
        t=started_at,
    )[0]
    assert after >= 10, f"only {after} of the backlog of 20 started after the urgent task"
    assert len(backlog) == 20


def test_a_workflows_steps_keep_their_tasks_priority(stack):
    """A chain of a task declared priority 7: each step, the first sent now and the next
    released by its end, goes by the high-priority queue."""
    from tasklane import chain

    urgent = registry.get("test.urgent")
    flow = chain(urgent.s({"step": 1}), urgent.s())
    handle = flow.delay()
    rows = dict(stack.query("SELECT id, priority FROM tasks"))
    assert set(rows.values()) == {7} and len(rows) == 2
    assert stack.depth(stack.lambda_high_queue) == 1 and stack.depth(stack.lambda_queue) == 0
    assert stack.lambda_lane(high=True).poll_once().deleted == 1  # the first; it releases the next
    assert stack.depth(stack.lambda_high_queue) == 1 and stack.depth(stack.lambda_queue) == 0
    assert stack.lambda_lane(high=True).poll_once().deleted == 1
    assert handle.get(timeout=5) == {"step": 1}


def test_a_failed_high_priority_task_backs_off_on_its_own_queue(stack, monkeypatch):
    """A failed attempt's message comes back after the retry back-off (its visibility set on
    the queue it came from), not after the queue's whole visibility timeout."""
    from tasklane import broker

    calls = []
    change = broker.change_visibility
    monkeypatch.setattr(
        broker, "change_visibility", lambda q, h, s: (calls.append((q, s)), change(q, h, s))
    )
    submit("test.fail_twice", {}, priority=9)
    assert len(stack.lambda_lane(high=True).poll_once().failed_ids) == 1
    assert calls == [(stack.lambda_high_queue, calls[0][1])] and 0 < calls[0][1] <= 10
