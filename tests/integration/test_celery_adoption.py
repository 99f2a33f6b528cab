"""Adopted Celery apps behave as Celery: the canvas, the options of ``apply_async``, retries,
results and signals, with the arguments in Postgres. A real ``celery worker`` process of the
tests' Celery project (tests/celery_app), moto's SQS server and a real Postgres.

Celery's own integration suite is the yardstick for the rest (``make celery-compat``,
tests/integration/test_celery_suite.py)."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import chain, chord, group, signals
from tasklane import TasklaneError

from tests.conftest import wait_for
from tests.integration.helpers import consumer_source
from tests.processes import Worker


@pytest.fixture
def worker(project_worker):
    return project_worker


def rows(stack, **where):
    sql = "SELECT id, task, lane, status, payload, celery, attempts FROM tasks"
    return stack.query(sql + (" WHERE task = :task" if where else ""), **where)


def test_the_canvas_runs_as_in_celery(stack, project, worker):
    """A chain, a group and a chord: each step's arguments went through Postgres."""
    assert chain(project.add.s(2, 3), project.mul.s(10)).delay().get(timeout=60) == 50
    assert group(project.add.s(i, i) for i in range(4)).delay().get(timeout=60) == [0, 2, 4, 6]
    body = chord([project.add.s(i, 1) for i in range(5)], project.tsum.s())
    assert body.delay().get(timeout=60) == 15
    stored = rows(stack, task="tests.celery_app.tasks.tsum")
    assert len(stored) == 1 and stored[0].status == "succeeded"
    assert stored[0].payload["args"] == [[1, 2, 3, 4, 5]]


def test_callbacks_errbacks_and_a_given_task_id(stack, project, worker, tmp_path):
    marker = tmp_path / "errback"
    chosen = str(uuid.uuid4())
    linked = project.add.apply_async(
        (1, 2), task_id=chosen, link=project.mul.s(3), headers={"tenant": "acme"}
    )
    assert linked.id == chosen and linked.get(timeout=60) == 3
    (child,) = wait_for(lambda: linked.children, 30, what="the callback")
    assert child.get(timeout=60) == 9
    (row,) = stack.query("SELECT payload FROM tasks WHERE id = :id", id=uuid.UUID(chosen))
    assert row.payload["embed"]["callbacks"][0]["task"] == "tests.celery_app.tasks.mul"

    failed = project.boom.apply_async(("no",), link_error=project.on_error.s(str(marker)))
    with pytest.raises(ValueError, match="no"):
        failed.get(timeout=60)
    wait_for(marker.exists, 30, what="the errback")
    assert marker.read_text() == f"{failed.id} ValueError"


def test_expires_and_countdown_are_celerys(stack, project, worker):
    late = project.add.apply_async((1, 1), expires=datetime.now(UTC) - timedelta(seconds=1))
    assert wait_for(lambda: late.state == "REVOKED", 60, what="the expired task revoked")
    started = datetime.now(UTC)
    prioritized = project.add.apply_async((2, 2), countdown=2, priority=3)
    assert prioritized.get(timeout=60) == 4
    assert datetime.now(UTC) - started >= timedelta(seconds=2)
    (row,) = stack.query("SELECT celery FROM tasks WHERE id = :id", id=uuid.UUID(prioritized.id))
    assert row.celery["priority"] == 3 and row.celery["status"] == "SUCCESS"


def test_results_ignored_when_asked_and_the_row_still_ends(stack, project, worker, tmp_path):
    marker = tmp_path / "ran"
    result = project.fire_and_forget.delay(str(marker))
    wait_for(marker.exists, 60, what="the run")
    (row,) = wait_for(
        lambda: [
            r for r in rows(stack, task=project.fire_and_forget.name) if r.status != "running"
        ],
        30,
        what="the row to end",
    )
    assert row.status == "succeeded" and result.state == "PENDING"  # Celery: nothing stored


def test_eager_runs_locally_and_stores_nothing(stack, project):
    assert project.add.apply((2, 3)).get() == 5
    project.add.app.conf.task_always_eager = True
    try:
        assert project.add.delay(4, 5).get() == 9
    finally:
        project.add.app.conf.task_always_eager = False
    assert rows(stack) == []


def test_publish_signals_see_the_arguments_and_the_queue_only_the_id(stack, project):
    seen = []

    def receiver(body=None, headers=None, **_):
        seen.append((body[0], headers["argsrepr"]))

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        result = project.add.delay(40, 2)
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == [((40, 2), "(40, 2)")]
    (message,) = stack.receive(stack.celery_queue)
    import base64

    envelope = json.loads(base64.b64decode(message["Body"]))
    assert envelope["headers"]["argsrepr"] == repr([result.id])
    assert json.loads(base64.b64decode(envelope["body"]))[0] == [result.id]


def test_a_duplicate_delivery_of_a_finished_task_does_not_run_it_again(
    stack, project, worker, tmp_path
):
    marker = tmp_path / "runs"
    result = project.count_runs.delay(str(marker))
    assert result.get(timeout=60) == "ran"
    # the same message again, as SQS may deliver it twice: acknowledged, not run
    from tasklane import broker

    body = broker.message_body(project.count_runs.name, uuid.UUID(result.id), "tl-celery")
    stack.sqs.send_message(QueueUrl=stack.celery_queue, MessageBody=body)
    wait_for(lambda: stack.depth(stack.celery_queue) == 0, 60, what="the duplicate consumed")
    assert marker.read_text().splitlines() == [result.id]


def test_lanes_by_name_in_the_apps_settings(stack, project, monkeypatch):
    """``tasklane_lanes`` sends a task to the lambda lane without touching its code."""
    monkeypatch.setitem(
        project.app.conf, "tasklane_lanes", {"tests.celery_app.tasks.mu*": "lambda"}
    )
    project.app.amqp.flush_routes()
    try:
        result = project.mul.delay(6, 7)
        assert stack.depth(stack.lambda_queue) == 1 and stack.depth(stack.celery_queue) == 0
        wait_for(lambda: consumer_source(stack).poll_once(), 20, what="the lambda lane")
        assert result.get(timeout=5) == 42
        # the lambda lane runs a task alone: a continuation is refused, never dropped
        with pytest.raises(TasklaneError, match=r"runs in the lambda lane.*callbacks"):
            project.mul.apply_async((1, 2), link=project.add.s(1))
        with pytest.raises(TasklaneError, match=r"runs in the lambda lane.*chain"):
            chain(project.mul.s(1, 2), project.add.s(1)).delay()
        assert stack.depth(stack.lambda_queue) == 0 and len(rows(stack)) == 1
    finally:
        project.app.conf.tasklane_lanes = {}
        project.app.amqp.flush_routes()


def test_tasklanes_own_options_and_bad_input_at_the_call_site(stack, project):
    with pytest.raises(TasklaneError, match="must be JSON"):
        project.add.apply_async((object(), 1), link=project.mul.s(2))
    with pytest.raises(TasklaneError, match="cannot be combined"):
        project.add.apply_async((1, 1), idempotency_key="k", link=project.mul.s(2))
    with pytest.raises(TasklaneError, match=r"unknown option.*countdwon"):
        project.add.apply_async((1, 1), countdwon=5)
    with pytest.raises(TasklaneError, match=r"no task named .tests.nope.*stub"):
        project.app.send_task("tests.nope", args=(1,))
    assert rows(stack) == [] and stack.depth(stack.celery_queue) == 0
    first = project.add.apply_async((1, 1), idempotency_key="order-7")
    again = project.add.apply_async((1, 1), idempotency_key="order-7")
    assert first.id == again.id and len(rows(stack)) == 1
    stamped = project.add.s(2, 2)
    stamped.stamp(tenant="acme")  # a declared stamp is an option like any other
    sent = stamped.apply_async(priority=7)
    (row,) = stack.query("SELECT celery FROM tasks WHERE id = :id", id=uuid.UUID(sent.id))
    assert row.celery == {"priority": 7}


def test_a_celery_priority_of_5_or_more_goes_by_the_lanes_high_priority_queue(
    stack, project, monkeypatch
):
    """Celery has no priorities on SQS; adopted, ``priority=`` 5 to 9 sends the message to its
    lane's high-priority queue (tasklane.lanes) and keeps the priority on the row, so the
    reconciler sends it again there. Below 5, or Celery's range beyond 9, the lane's queue."""
    high = project.add.apply_async((1, 1), priority=8)
    low = project.add.apply_async((1, 1), priority=4)
    beyond = project.add.apply_async((1, 1), priority=200)  # RabbitMQ's range: not ours
    assert stack.depth(stack.celery_high_queue) == 1 and stack.depth(stack.celery_queue) == 2
    priorities = dict(stack.query("SELECT id, priority FROM tasks"))
    assert priorities[uuid.UUID(high.id)] == 8 and priorities[uuid.UUID(low.id)] == 4
    assert priorities[uuid.UUID(beyond.id)] is None
    monkeypatch.setitem(
        project.app.conf, "tasklane_lanes", {"tests.celery_app.tasks.mu*": "lambda"}
    )
    project.app.amqp.flush_routes()
    try:
        project.mul.apply_async((6, 7), priority=9)
        assert stack.depth(stack.lambda_high_queue) == 1 and stack.depth(stack.lambda_queue) == 0
    finally:
        project.app.conf.tasklane_lanes = {}
        project.app.amqp.flush_routes()


def test_each_run_is_an_attempt_in_the_tasks_history(stack, project, worker, tmp_path):
    """Celery's own outcomes (a retry, a failure, a success) are the attempts tasklane shows,
    with the error's type and message and the worker process that ran each."""
    flaky = project.flaky.delay(str(tmp_path / "runs"))
    failed = project.boom.delay("the input was wrong")
    assert flaky.get(timeout=60) == 2
    with pytest.raises(ValueError):
        failed.get(timeout=60)

    def history(result):
        sql = "SELECT history FROM tasks WHERE id = :id"
        return stack.query(sql, id=uuid.UUID(result.id))[0].history or []

    retried = wait_for(lambda: len(history(flaky)) == 2 and history(flaky), 30, what="2 entries")
    assert [e["outcome"] for e in retried] == ["failed", "succeeded"]
    assert retried[0]["error"]["type"] == "Retry" and retried[1]["error"] is None
    assert all(e["ran_on"].split(":")[1].isdigit() for e in retried)
    (entry,) = history(failed)
    assert entry["outcome"] == "failed" and entry["finished_at"]
    assert entry["error"] == {"type": "ValueError", "message": "the input was wrong"}


def test_celerys_rate_limit_is_global(stack, project, worker):
    """An adopted task's rate_limit spaces its starts across workers (Celery's own counts
    each worker apart): two workers of two processes each run six at two a second."""
    second = Worker(
        stack.env | {"TASK_MODULES": "tests.celery_app.tasks"},
        stack.celery_queue.rsplit("/", 1)[-1],
        *("--concurrency", "2", "--hostname", "second@%h"),
        app="tests.celery_app",
    )
    try:
        second.wait_ready()
        results = [project.paced.delay(n) for n in range(6)]
        assert [r.get(timeout=60) for r in results] == [0, 1, 2, 3, 4, 5]
    finally:
        second.stop()
    sql = "SELECT started_at, attempts FROM tasks WHERE task = :t ORDER BY started_at"
    rows = stack.query(sql, t=project.paced.name)
    starts = [r.started_at.timestamp() for r in rows]
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 3
    assert starts[-1] - starts[0] >= 2.3 and {r.attempts for r in rows} == {1}


def test_a_concurrency_limit_on_an_adopted_task_holds_across_worker_processes(
    stack, project, worker
):
    """``@app.task(concurrency=1)``: tasklane's limit, enforced at the claim in Postgres, so
    the worker's two processes never run two at once; a delivery over it spends no retry."""
    results = [project.single.delay(0.3) for _ in range(4)]
    assert [r.get(timeout=60) for r in results] == [0.3] * 4
    sql = "SELECT started_at, finished_at, attempts FROM tasks WHERE task = :t ORDER BY started_at"
    runs = stack.query(sql, t=project.single.name)
    assert {r.attempts for r in runs} == {1}
    for before, after in itertools.pairwise(runs):
        assert after.started_at >= before.finished_at, "two runs overlapped"
