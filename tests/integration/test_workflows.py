"""Workflows on real parts: chain, group and chord over HTTP and from Python, through the
lambda lane's consumer (moto, emulated event source) and a real Celery worker; failure and
resume, cancel, and a chord's body released once however its members race."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from sqlalchemy import text
from tasklane import (
    TaskFailed,
    WorkflowHandle,
    broker,
    chain,
    chord,
    database,
    group,
    reads,
    service,
)
from tasklane.config import settings
from tasklane.executor import Delivery, Executor, delivery_token
from tasklane.lanes import Lane
from tasklane.store import default_store

from tests import tasks
from tests.integration.helpers import call_api, consumer_source


def run_until(stack, workflow_id: str, timeout: float = 120, sources: int = 1) -> dict:
    """Run the lambda lane (``sources`` consumers side by side) until the workflow is
    finished; its GET /workflows/{id}. A celery-lane step runs in the test's worker."""
    finished = threading.Event()
    view: dict = {}

    def poll() -> None:
        source = consumer_source(stack, poll_wait=1)
        while not finished.is_set():
            source.poll_once()

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(sources)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            view = call_api("GET", f"/workflows/{workflow_id}")[2]
            if view["status"] != "running":
                return view
            time.sleep(0.1)
        raise AssertionError(f"workflow still running after {timeout} s: {json.dumps(view)}")
    finally:
        finished.set()
        for thread in threads:
            thread.join(10)


def post_workflow(description: dict) -> dict:
    status, headers, body = call_api("POST", "/workflows", description)
    assert status == 202, body
    assert headers["location"] == f"/workflows/{body['id']}"
    return body


def rows(sql: str, **params) -> list:
    with database.engine().connect() as conn:
        return list(conn.execute(text(sql), params))


def leaf(task: str, payload=...) -> dict:
    return {"task": task} if payload is ... else {"task": task, "payload": payload}


# ------------------------------------------------------------------------------ shapes
def test_a_chain_passes_each_result_to_the_next_step(stack):
    created = post_workflow(
        {"chain": [leaf("wf.add", 1), leaf("wf.add"), leaf("wf.add", 10), leaf("test.echo")]}
    )
    statuses = [t["status"] for t in created["tasks"]]
    assert statuses == ["queued", "waiting", "waiting", "waiting"]  # one message so far
    assert stack.depth(stack.lambda_queue) == 1
    done = run_until(stack, created["id"])
    assert done["status"] == "succeeded"
    # 1+1 = 2; 2+1 = 3; {"payload": 10, "previous": 3} → 13; echo
    assert done["result"] == {"echo": 13}
    step_ids = [t["id"] for t in created["tasks"]]
    (bound,) = rows("SELECT payload FROM tasks WHERE id = :id", id=uuid.UUID(step_ids[2]))
    assert bound.payload == {"payload": 10, "previous": 3}
    assert call_api("GET", f"/tasks/{step_ids[3]}")[2]["workflow_id"] == created["id"]


def test_a_group_returns_its_results_in_member_order(stack):
    created = post_workflow({"group": [leaf("wf.add", n) for n in range(8)]})
    assert {t["status"] for t in created["tasks"]} == {"queued"}  # sent in one bulk path
    done = run_until(stack, created["id"], sources=2)  # finishing in any order
    assert done["result"] == [n + 1 for n in range(8)]


def test_a_chord_with_a_lambda_header_and_a_celery_body(stack, celery_worker):
    created = post_workflow(
        {
            "chord": {
                "header": [leaf("wf.add", n) for n in range(5)],
                "body": leaf("wf.total_celery"),
            }
        }
    )
    lanes = [t["lane"] for t in created["tasks"]]
    assert lanes == ["lambda"] * 5 + ["celery"]
    done = run_until(stack, created["id"])
    assert done["status"] == "succeeded" and done["result"] == sum(n + 1 for n in range(5))
    (body,) = rows(
        "SELECT payload, attempts FROM tasks WHERE id = :id",
        id=uuid.UUID(created["tasks"][-1]["id"]),
    )
    assert body.payload == [1, 2, 3, 4, 5] and body.attempts == 1


def test_a_chain_containing_a_chord_from_python(stack, celery_worker):
    workflow = (
        tasks.add_celery.s(0)  # celery: 1
        | chord([tasks.add.s(), tasks.add.s(5)], tasks.total.s())  # [2, 6] → 8
        | group(tasks.add.s(), tasks.add_celery.s(100))  # [9, {"payload":100,"previous":8} → 108]
    )
    handle = workflow.delay()
    assert isinstance(handle, WorkflowHandle) and len(handle.task_ids) == 6
    assert run_until(stack, str(handle.id))["result"] == [9, 108]
    assert handle.get(timeout=0) == [9, 108]


def test_a_thousand_member_chord_calls_back_once(stack):
    members = 1000
    handle = chord([tasks.add.s(n) for n in range(members)], tasks.total.s()).delay()
    assert len(handle.task_ids) == members + 1
    done = run_until(stack, str(handle.id), timeout=600, sources=2)
    assert done["status"] == "succeeded"
    assert done["result"] == sum(n + 1 for n in range(members))
    (body,) = rows("SELECT payload, attempts FROM tasks WHERE id = :id", id=handle.task_ids[-1])
    assert body.attempts == 1 and body.payload == [n + 1 for n in range(members)]


# ------------------------------------------------------------------------------ failure, cancel
def test_a_failed_member_fails_the_workflow_and_its_retry_resumes_it(stack, tmp_path):
    gate = tmp_path / "open"
    created = post_workflow(
        {
            "chain": [
                leaf("wf.gate", {"file": str(gate), "value": 41}),
                leaf("wf.add"),
            ]
        }
    )
    failed = run_until(stack, created["id"])
    first, second = (t["id"] for t in created["tasks"])
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "task_id": first,
        "task": "wf.gate",
        "type": "RuntimeError",
        "message": "the gate is shut",
    }
    assert failed["tasks"][1]["status"] == "waiting"  # the chain stopped; nothing ran after it
    with pytest.raises(TaskFailed, match="the gate is shut"):
        WorkflowHandle(uuid.UUID(created["id"]), ()).get(timeout=0)
    gate.touch()
    assert call_api("POST", f"/tasks/{first}/retry")[0] == 202
    resumed = run_until(stack, created["id"])
    assert resumed["status"] == "succeeded" and resumed["result"] == 42
    assert call_api("GET", f"/tasks/{second}")[2]["attempts"] == 1


def test_cancelling_a_workflow_cancels_what_has_not_run(stack, tmp_path):
    created = post_workflow(
        {"chain": [leaf("wf.add", 1), {"group": [leaf("wf.add"), leaf("wf.add")]}]}
    )
    status, _, view = call_api("POST", f"/workflows/{created['id']}/cancel")
    assert status == 200 and view["status"] == "cancelled"
    assert {t["status"] for t in view["tasks"]} == {"cancelled"}
    consumer_source(stack).poll_once()  # the first step's message: acknowledged, not run
    assert stack.depth(stack.lambda_queue) == 0
    assert [r.attempts for r in rows("SELECT attempts FROM tasks")] == [0, 0, 0]
    assert call_api("POST", f"/workflows/{uuid.uuid4()}/cancel")[0] == 404


def test_cancelling_one_step_cancels_the_rest_of_its_workflow(stack):
    handle = chain(tasks.add.s(1), tasks.add.s(), tasks.add.s()).delay()
    first, *rest = handle.tasks()
    first.cancel()
    assert handle.status() == "cancelled"
    assert {t.status() for t in rest} == {"cancelled"}
    later = chain(tasks.add.s(1), tasks.add.s()).delay()  # a step still waiting, over HTTP
    status, _, body = call_api("POST", f"/tasks/{later.task_ids[1]}/cancel")
    assert status == 200 and body["status"] == "cancelled", body
    assert later.status() == "cancelled"


def test_a_steps_cancel_and_its_workflows_commit_together(stack):
    """One transaction: no failure between two can leave the step cancelled and the rest of
    its workflow waiting (which a repeated cancel, finding the step finished, would refuse)."""
    from sqlalchemy import event

    handle = chain(tasks.add.s(1), tasks.add.s(), tasks.add.s()).delay()
    commits: list[object] = []
    listener = lambda conn: commits.append(conn)  # noqa: E731
    event.listen(database.engine(), "commit", listener)
    try:
        status, _, body = call_api("POST", f"/tasks/{handle.task_ids[1]}/cancel")
    finally:
        event.remove(database.engine(), "commit", listener)
    assert status == 200 and body["status"] == "cancelled"
    assert len(commits) == 1 and handle.status() == "cancelled"
    assert {t.status() for t in handle.tasks()} == {"cancelled"}


# ------------------------------------------------------------------------------ exactly once
def test_the_last_members_finishing_at_once_release_the_body_once(stack):
    """Two header members settle at the same moment, each in its own transaction: the body is
    released by exactly one of them, never by neither, whatever the interleaving."""
    for _ in range(5):
        handle = chord([tasks.add.s(1), tasks.add.s(2)], tasks.total.s()).delay()
        executor = Executor(default_store())
        attempts = []
        for member in handle.task_ids[:2]:
            attempt = executor.claim(Delivery("wf.add", member, delivery_token("m")), 60)
            attempts.append(attempt)
        barrier = threading.Barrier(2)
        released = []

        def settle(attempt, barrier=barrier, released=released) -> None:
            barrier.wait()
            outcome = default_store().settle(attempt.id, attempt.delivery.token, "5")
            released.extend(outcome.released)

        threads = [threading.Thread(target=settle, args=(a,)) for a in attempts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [r.id for r in released] == [handle.task_ids[2]]
        (body,) = rows("SELECT status, payload FROM tasks WHERE id = :id", id=handle.task_ids[2])
        assert body.status == "pending" and body.payload == [5, 5]


def test_duplicate_deliveries_of_every_member_run_the_body_once(stack, tmp_path):
    ledger = tmp_path / "ledger"
    handle = chord(
        [tasks.add.s(n) for n in range(10)],
        tasks.record.s({"ledger": str(ledger)}),
    ).delay()
    members = default_store().workflow(handle.id)[1][:10]
    copies = [broker.Outgoing(r.id, r.task, Lane.LAMBDA, 0) for r in members]
    assert len(broker.publish(copies, settings())) == 10  # every member's message twice
    done = run_until(stack, str(handle.id), sources=2)
    assert done["status"] == "succeeded"
    assert ledger.read_text().splitlines() == ["body"]
    assert done["result"] == {"members": 10}


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("description", "status", "says"),
    [
        ({"chain": []}, 400, "chain"),
        ({"group": [{"task": "wf.add"}]}, 400, "needs a payload"),
        ({"chain": [leaf("wf.add")]}, 400, "needs a payload"),
        ({"chord": {"header": [leaf("wf.add", 1)]}}, 400, "body"),
        ({"task": "wf.add", "payload": 1, "extra": 2}, 400, "extra"),
        ({"loop": []}, 400, "task"),
        ({"chain": [leaf("no.such.task", 1)]}, 422, "no.such.task"),
        ({"group": [leaf("wf.add", n) for n in range(1001)]}, 400, "at most 1000 tasks"),
        (  # 500 x 500 links: quadratic work on every member's outcome
            {
                "chain": [
                    {"group": [leaf("wf.add", n) for n in range(500)]},
                    {"group": [leaf("wf.add")] * 500},
                ]
            },
            400,
            "put one step between them",
        ),
        ({"group": [leaf("test.size", {"data": "x" * 3_000_000})] * 2}, 413, "payloads"),
    ],
)
def test_bad_workflows_are_refused_and_nothing_is_stored(stack, description, status, says):
    got, _, body = call_api("POST", "/workflows", description)
    assert got == status, body
    assert says in body["error"]["message"]
    assert rows("SELECT count(*) AS n FROM tasks")[0].n == 0
    assert rows("SELECT count(*) AS n FROM workflows")[0].n == 0


def test_an_unknown_workflow_is_404(stack):
    assert call_api("GET", f"/workflows/{uuid.uuid4()}")[0] == 404
    assert call_api("GET", "/workflows/not-a-uuid")[0] == 404


def test_a_workflow_enqueued_in_a_rolled_back_transaction_never_existed(stack):
    with database.engine().connect() as conn:
        conn.begin()
        chain(tasks.add.s(1), tasks.add.s()).apply_async(connection=conn)
        conn.rollback()
    assert rows("SELECT count(*) AS n FROM workflows")[0].n == 0
    assert stack.depth(stack.lambda_queue) == 0


def test_a_cancel_meeting_a_members_outcome_waits_for_it_rather_than_deadlock(stack, monkeypatch):
    """A member's outcome locks its own row, then the steps waiting for it. Cancelling the
    workflow locked the waiting steps first, then the running member: a deadlock, which
    Postgres broke by aborting one of them (the outcome, once: a run lost)."""
    from tasklane.store import TaskStore

    handle = chord([tasks.add.s(1), tasks.add.s(2)], tasks.total.s()).delay()
    first, second, body = handle.task_ids
    store = default_store()
    attempt = Executor(store).claim(Delivery("wf.add", first, delivery_token("m")), 60)
    release = TaskStore._release
    settling = threading.Event()

    def slow_release(self, conn, then):
        settling.set()
        time.sleep(1.5)  # the cancel arrives now, between the member's row and its successor's
        return release(self, conn, then)

    monkeypatch.setattr(TaskStore, "_release", slow_release)
    outcome = {}
    settle = threading.Thread(
        target=lambda: outcome.update(
            settled=store.settle(attempt.id, attempt.delivery.token, "2").status
        )
    )
    settle.start()
    assert settling.wait(10)
    view = service.cancel_workflow(handle.id)  # must neither fail nor make the outcome fail
    settle.join(30)
    assert outcome["settled"] == "succeeded"
    statuses = {r.id: r.status for r in view.tasks}
    assert statuses[first] == "succeeded"
    assert statuses[second] == statuses[body] == "cancelled"


def test_a_body_whose_input_is_too_large_fails_itself_not_its_last_member(stack):
    """Members' results together past MAX_PAYLOAD_BYTES (100 bytes here) cannot be the body's
    payload. The member's outcome must still commit (it once could not: Postgres refused the
    array, and the member ran again until the DLQ, blamed for it)."""
    from tasklane.store import TaskStore

    store = TaskStore(database.engine(), max_payload_bytes=100)
    handle = chord([tasks.add.s(1), tasks.add.s(2)], tasks.total.s()).delay()
    first, second, body = handle.task_ids
    executor = Executor(store)
    for member in (first, second):
        attempt = executor.claim(Delivery("wf.add", member, delivery_token("m")), 60)
        settled = store.settle(attempt.id, attempt.delivery.token, json.dumps("x" * 60))
        assert settled.status == "succeeded" and settled.released == []
    view = reads.get_workflow(handle.id)
    assert view.status == "failed"
    assert view.error["task_id"] == str(body) and view.error["type"] == "InputTooLarge"
    assert "MAX_PAYLOAD_BYTES" in view.error["message"]
    status, _, answer = call_api("POST", f"/tasks/{body}/retry")
    assert status == 409 and "would again" in answer["error"]["message"]


def test_a_long_chain_runs_to_its_end_in_eager_mode(tasklane_eager):
    """Each step used to run inside the one before (a recursion 300 steps deep gave up)."""
    handle = chain(tasks.add.s(0), *[tasks.add.s() for _ in range(299)]).delay()
    assert handle.get(timeout=0) == 300
