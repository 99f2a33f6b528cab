"""The store's conditional updates against a real Postgres."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from sqlalchemy import event
from tasklane import database
from tasklane.errors import InvalidTransition, TaskNotFound
from tasklane.lifecycle import Status
from tasklane.store import Claimed, NewTask, NotClaimed, TaskStore


@pytest.fixture
def store(stack) -> TaskStore:
    return TaskStore(database.engine())


def new(task="test.echo", payload=None, max_attempts=None) -> NewTask:
    return NewTask(uuid.uuid4(), task, "lambda", json.dumps(payload or {"k": 1}), max_attempts)


def test_multi_row_insert_is_one_statement(store):
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        records = store.insert([new(payload={"i": i}) for i in range(50)])
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert len([s for s in statements if "INSERT" in s.upper()]) == 1
    assert len(records) == 50 and all(r.status is Status.PENDING for r in records)
    # each row got its own payload (the arrays are zipped by position) and the stored times
    claims = store.claim({r.id: r.task for r in records}, 60)
    assert [claims[r.id].payload for r in records] == [{"i": i} for i in range(50)]
    stored = store.get(records[7].id)
    assert records[7].created_at == stored.created_at and stored.created_at is not None


def test_claim_loads_payload_and_counts_the_attempt(store):
    (record,) = store.insert([new(payload={"big": "x" * 1000})])
    claims = store.claim({record.id: "test.echo"}, 60)
    claim = claims[record.id]
    assert isinstance(claim, Claimed)
    assert claim.attempt == 1 and claim.payload == {"big": "x" * 1000}
    assert store.get(record.id).status is Status.RUNNING


def test_a_live_claim_blocks_a_second_one_and_an_expired_one_does_not(store):
    (record,) = store.insert([new()])
    assert isinstance(store.claim({record.id: "test.echo"}, 0.5)[record.id], Claimed)
    blocked = store.claim({record.id: "test.echo"}, 60)[record.id]
    assert isinstance(blocked, NotClaimed) and blocked.status is Status.RUNNING
    time.sleep(0.6)
    again = store.claim({record.id: "test.echo"}, 60)[record.id]
    assert isinstance(again, Claimed) and again.attempt == 2
    # the first attempt lost its claim: its result is not written
    assert not store.succeed(record.id, 1, '"late"')
    assert store.succeed(record.id, 2, '"ok"')
    assert store.get(record.id).result == "ok"


def test_two_concurrent_claims_only_one_wins(store):
    records = store.insert([new() for _ in range(20)])
    wanted = {r.id: "test.echo" for r in records}
    results: list[dict] = []
    barrier = threading.Barrier(2)

    def claim():
        barrier.wait()
        results.append(store.claim(wanted, 60))

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in records:
        winners = [res[r.id] for res in results if isinstance(res[r.id], Claimed)]
        assert len(winners) == 1, r.id


def test_unclaimed_ids_say_why(store):
    done, wrong_name = store.insert([new(), new()])
    claim = store.claim({done.id: "test.echo"}, 60)[done.id]
    assert store.succeed(done.id, claim.attempt, "1")
    missing = uuid.uuid4()
    out = store.claim({done.id: "test.echo", missing: "test.echo", wrong_name.id: "other"}, 60)
    assert out[done.id] == NotClaimed(done.id, Status.SUCCEEDED, "test.echo")
    assert out[missing] == NotClaimed(missing, None, None)
    assert out[wrong_name.id] == NotClaimed(wrong_name.id, Status.PENDING, "test.echo")
    assert store.get(wrong_name.id).attempts == 0  # a mismatched message claims nothing


def test_failure_then_requeue(store):
    (record,) = store.insert([new(max_attempts=1)])
    claim = store.claim({record.id: "test.echo"}, 60)[record.id]
    assert store.fail(record.id, claim.attempt, {"type": "E", "message": "m"}, Status.FAILED)
    failed = store.get(record.id)
    assert failed.status is Status.FAILED and failed.error["message"] == "m"
    again = store.requeue_failed(record.id)
    assert again.status is Status.PENDING and again.attempts == 0 and again.error is None
    with pytest.raises(InvalidTransition):
        store.requeue_failed(record.id)
    with pytest.raises(TaskNotFound):
        store.requeue_failed(uuid.uuid4())


def test_idempotent_insert_returns_the_first_task(store):
    first, _, created = store.insert_idempotent(new(), "key-1", "hash-a")
    second, stored_hash, created_again = store.insert_idempotent(new(), "key-1", "hash-b")
    assert created and not created_again
    assert second.id == first.id and stored_hash == "hash-a"


def test_stale_pending_tasks_are_taken_once(store):
    records = store.insert([new() for _ in range(3)])
    store.mark_queued([records[0].id])
    assert store.claim_stale_pending(grace_seconds=3600) == []
    time.sleep(1.1)
    taken = store.claim_stale_pending(grace_seconds=1)
    assert {r.id for r in taken} == {records[1].id, records[2].id}
    assert store.claim_stale_pending(grace_seconds=1) == []  # touched: not again within the grace


def test_mark_dead_keeps_the_last_error_and_spares_finished_tasks(store):
    a, b = store.insert([new(), new()])
    claim = store.claim({a.id: "test.echo"}, 60)[a.id]
    store.fail(a.id, claim.attempt, {"type": "ValueError", "message": "boom"}, Status.QUEUED)
    assert store.mark_dead(a.id, {"type": "DeadLetter", "message": "dlq"})
    assert store.get(a.id).error["type"] == "ValueError"
    assert store.get(a.id).status is Status.FAILED
    claim_b = store.claim({b.id: "test.echo"}, 60)[b.id]
    store.succeed(b.id, claim_b.attempt, "1")
    assert not store.mark_dead(b.id, {"type": "DeadLetter", "message": "dlq"})
    assert store.get(b.id).status is Status.SUCCEEDED


def test_a_dead_duplicate_spares_a_task_running_under_a_live_lease(store):
    (record,) = store.insert([new()])
    claim = store.claim({record.id: "test.echo"}, 60)[record.id]
    assert not store.mark_dead(record.id, {"type": "DeadLetter", "message": "duplicate"})
    assert store.succeed(record.id, claim.attempt, '"done"')
    assert store.get(record.id).status is Status.SUCCEEDED


def test_a_dead_message_fails_a_task_whose_lease_expired(store):
    (record,) = store.insert([new()])
    store.claim({record.id: "test.echo"}, 0.2)
    time.sleep(0.3)
    assert store.mark_dead(record.id, {"type": "DeadLetter", "message": "worker died"})
    assert store.get(record.id).status is Status.FAILED


def test_a_dead_message_of_a_task_that_never_ran_puts_it_back_to_pending(store):
    never_ran, ran = store.insert([new(), new()])
    store.mark_queued([never_ran.id, ran.id])
    claim = store.claim({ran.id: "test.echo"}, 60)[ran.id]
    store.fail(ran.id, claim.attempt, {"type": "E", "message": "m"}, Status.QUEUED)
    assert store.requeue_unstarted(never_ran.id)
    assert store.get(never_ran.id).status is Status.PENDING  # the reconciler sends it again
    assert not store.requeue_unstarted(ran.id)  # it ran: the dead letter fails it
    assert store.mark_dead(ran.id, {"type": "DeadLetter", "message": "x"})
