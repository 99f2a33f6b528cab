"""The store's conditional updates against a real Postgres."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from sqlalchemy import event, text
from tasklane import database
from tasklane.errors import InvalidTransition, TaskNotFound
from tasklane.lifecycle import Status, retry_delay_seconds
from tasklane.store import Claim, Claimed, Failure, NewTask, NotClaimed, TaskFilter, TaskStore

ERROR = {"type": "ValueError", "message": "boom"}


@pytest.fixture
def store(stack) -> TaskStore:
    return TaskStore(database.engine())


def new(task="test.echo", payload=None, max_attempts=None) -> NewTask:
    return NewTask(uuid.uuid4(), task, "lambda", json.dumps(payload or {"k": 1}), max_attempts)


def claim(task_id, token=None, task="test.echo") -> Claim:
    return Claim(task_id, task, token or f"m-{uuid.uuid4()}#t")


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
    claims = [store.claim(claim(r.id), 60) for r in records]
    assert [json.loads(c.payload_json) for c in claims] == [{"i": i} for i in range(50)]
    stored = store.get(records[7].id)
    assert records[7].created_at == stored.created_at and stored.created_at is not None


def test_claim_returns_the_payload_as_stored_text_and_counts_the_run(store):
    (record,) = store.insert([new(payload={"big": "x" * 1000})])
    claimed = store.claim(claim(record.id), 60)
    assert isinstance(claimed, Claimed)
    assert claimed.attempt == 1 and json.loads(claimed.payload_json) == {"big": "x" * 1000}
    assert store.get(record.id).status is Status.RUNNING


def test_a_payload_no_decoder_survives_is_claimed_as_text(store):
    """A payload stored before the API's depth limit (or by hand): loading it is the task's
    business (its failure), not the claim's, which once died in the driver and looped."""
    (record,) = store.insert([new()])
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET payload = CAST(:p AS jsonb) WHERE id = :id"),
            {"p": "[" * 3000 + "]" * 3000, "id": record.id},
        )
    claimed = store.claim(claim(record.id), 60)
    assert isinstance(claimed, Claimed) and claimed.payload_json.startswith("[[[[")


def test_a_live_claim_blocks_a_second_one_and_an_expired_one_does_not(store):
    (record,) = store.insert([new()])
    first, second = claim(record.id), claim(record.id)
    assert isinstance(store.claim(first, 0.5), Claimed)
    blocked = store.claim(second, 60)
    assert isinstance(blocked, NotClaimed) and blocked.status is Status.RUNNING
    time.sleep(0.6)
    again = store.claim(second, 60)
    assert isinstance(again, Claimed) and again.attempt == 2
    # the first delivery lost its claim: its result is not written
    assert store.settle(record.id, first.token, '"late"').status is None
    assert store.settle(record.id, second.token, '"ok"')[0] is Status.SUCCEEDED
    assert store.get(record.id).result == "ok"


def test_fencing_never_lets_an_old_attempt_write_over_a_later_one(store):
    """Attempt numbers repeat (a retry of a failed task starts again from 1); delivery tokens
    do not, so a stale delivery's late outcome can never land on a newer attempt."""
    (record,) = store.insert([new(max_attempts=1)])
    old = claim(record.id)
    store.claim(old, 60)
    assert store.settle(record.id, old.token, Failure(ERROR))[0] is Status.FAILED
    store.requeue_failed(record.id)
    new_claim = claim(record.id)
    assert store.claim(new_claim, 60).attempt == 1  # the same number as the old attempt
    assert store.settle(record.id, old.token, '"stale"').status is None
    assert store.get(record.id).status is Status.RUNNING
    assert store.settle(record.id, new_claim.token, '"fresh"')[0] is Status.SUCCEEDED
    assert store.get(record.id).result == "fresh"


def test_a_claim_replayed_after_a_lost_reply_is_its_own_and_counts_once(store):
    (record,) = store.insert([new()])
    mine = claim(record.id)
    assert store.claim(mine, 60).attempt == 1
    replay = store.claim(mine, 60)  # the first commit's reply never arrived
    assert isinstance(replay, Claimed) and replay.attempt == 1
    assert store.get(record.id).attempts == 1


def test_an_outcome_replayed_after_a_lost_reply_finds_its_own_write(store):
    """A retryable failure whose commit reply is lost: the retry of the same write must not
    read as 'claim lost', which acknowledged the message and stranded the task queued."""
    failing, succeeding = store.insert([new(), new()])
    a, b = claim(failing.id), claim(succeeding.id)
    store.claim(a, 60)
    store.claim(b, 60)
    assert store.settle(failing.id, a.token, Failure(ERROR))[0] is Status.QUEUED
    assert store.settle(failing.id, a.token, Failure(ERROR))[0] is Status.QUEUED
    assert store.settle(succeeding.id, b.token, '"r"')[0] is Status.SUCCEEDED
    assert store.settle(succeeding.id, b.token, '"r"')[0] is Status.SUCCEEDED
    # but not another failure: that would be a different write
    other = {"type": "E", "message": "other"}
    assert store.settle(failing.id, a.token, Failure(other)).status is None


def test_max_attempts_and_final_failures_end_the_task(store):
    limited, unreadable = store.insert([new(max_attempts=2), new()])
    for expected in (Status.QUEUED, Status.FAILED):
        c = claim(limited.id)
        store.claim(c, 60)
        assert store.settle(limited.id, c.token, Failure(ERROR))[0] is expected
    c = claim(unreadable.id)
    store.claim(c, 60)
    assert store.settle(unreadable.id, c.token, Failure(ERROR, final=True))[0] is Status.FAILED


def test_an_outcome_and_the_next_claim_share_one_round_trip(store):
    first, second, done = store.insert([new(payload={"n": 1}), new(payload={"n": 2}), new()])
    d = claim(done.id)
    store.claim(d, 60)
    store.settle(done.id, d.token, "0")
    a, b = claim(first.id), claim(second.id)
    store.claim(a, 60)
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        status, ahead, _ = store.settle(first.id, a.token, "1", b, 60)
        _, finished, _ = store.settle(second.id, b.token, "2", claim(done.id), 60)
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert len(statements) == 2
    assert status is Status.SUCCEEDED and isinstance(ahead, Claimed)
    assert json.loads(ahead.payload_json) == {"n": 2} and ahead.attempt == 1
    assert finished == NotClaimed(done.id, Status.SUCCEEDED, "test.echo", None)


def test_two_concurrent_claims_only_one_wins(store):
    records = store.insert([new() for _ in range(20)])
    results: list[list] = [[], []]
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        results[i] = [store.claim(claim(r.id), 60) for r in records]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(len(records)):
        assert sum(isinstance(results[i][n], Claimed) for i in range(2)) == 1


def test_unclaimed_ids_say_why(store):
    done, wrong_name, later = store.insert([new(), new(), new()])
    d = claim(done.id)
    store.claim(d, 60)
    store.settle(done.id, d.token, "1")
    missing = uuid.uuid4()
    assert store.claim(claim(done.id), 60) == NotClaimed(done.id, Status.SUCCEEDED, "test.echo")
    assert store.claim(claim(missing), 60) == NotClaimed(missing, None, None)
    assert store.claim(claim(wrong_name.id, task="other"), 60) == NotClaimed(
        wrong_name.id, Status.PENDING, "test.echo"
    )
    assert store.get(wrong_name.id).attempts == 0  # a mismatched message claims nothing
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET run_at = now() + interval '1 hour' WHERE id = :id"),
            {"id": later.id},
        )
    early = store.claim(claim(later.id), 60)
    assert isinstance(early, NotClaimed) and early.run_at is not None  # not due: never early


def test_failure_then_requeue(store):
    (record,) = store.insert([new(max_attempts=1)])
    c = claim(record.id)
    store.claim(c, 60)
    assert store.settle(record.id, c.token, Failure(ERROR))[0] is Status.FAILED
    failed = store.get(record.id)
    assert failed.status is Status.FAILED and failed.error["message"] == "boom"
    again = store.requeue_failed(record.id)
    assert again.status is Status.PENDING and again.attempts == 0 and again.error is None
    with pytest.raises(InvalidTransition):
        store.requeue_failed(record.id)
    with pytest.raises(TaskNotFound):
        store.requeue_failed(uuid.uuid4())


def test_each_attempt_is_kept_in_the_history_across_a_retry(store):
    (record,) = store.insert([new(max_attempts=3)])
    first, second, third = claim(record.id), claim(record.id), claim(record.id)
    store.claim(first, 0.3)
    time.sleep(0.4)  # its process died: the lease runs out with no outcome
    store.claim(second, 60)
    waiting = Failure(ERROR)
    assert store.settle(record.id, second.token, waiting).status is Status.QUEUED
    assert store.settle(record.id, second.token, waiting).status is Status.QUEUED  # a replay
    queued = store.get(record.id)
    due = (queued.retry_at - queued.updated_at).total_seconds()
    back_off = retry_delay_seconds(2)  # its attempt's: when its message comes back
    assert back_off - 1 <= due <= back_off + 1, due
    store.claim(third, 60)
    assert store.get(record.id).retry_at is None
    assert store.settle(record.id, third.token, Failure(ERROR)).status is Status.FAILED
    store.requeue_failed(record.id)  # a manual retry: attempts counted afresh, history kept
    fourth = claim(record.id)
    store.claim(fourth, 60)
    assert store.settle(record.id, fourth.token, '"ok"').status is Status.SUCCEEDED
    history = store.get(record.id).history
    assert [(h["attempt"], h["outcome"]) for h in history] == [
        (1, "lost"),
        (2, "failed"),
        (3, "failed"),
        (1, "succeeded"),
    ]  # the replayed outcome appended nothing
    assert history[1]["error"] == ERROR and history[3]["error"] is None
    assert all(h["started_at"] <= h["finished_at"] for h in history)
    assert ":" in history[3]["ran_on"]  # host:pid outside Lambda
    assert store.find(TaskFilter(), 500)[0].history is None  # listings leave it out


def test_a_retry_is_due_after_the_lanes_back_off_of_its_attempt(store):
    """Whoever records the failure (a consumer, a worker recording a lost run), its retry_at is
    the lanes' back-off of its attempt number, as SQS will deliver it; a replay leaves it as
    it was."""
    (record,) = store.insert([new(max_attempts=5)])
    for attempt in (1, 2, 3):
        c = claim(record.id)
        store.claim(c, 60)
        store.settle(record.id, c.token, Failure(ERROR))
        first = store.get(record.id)
        store.settle(record.id, c.token, Failure(ERROR))  # a replay after a lost reply
        queued = store.get(record.id)
        assert queued.retry_at == first.retry_at
        due = (queued.retry_at - queued.updated_at).total_seconds()
        assert abs(due - retry_delay_seconds(attempt)) < 1.5, (attempt, due)


def test_a_run_that_ends_without_its_outcome_is_a_lost_attempt(store):
    """Its message dead-lettered while it ran with no outcome: the history says the attempt
    was lost; a task failed that way keeps no retry_at."""
    dead, retrying = store.insert([new(), new()])
    store.claim(claim(dead.id, token=f"m-{dead.id}#t"), 0.2)
    c = claim(retrying.id, token=f"m-{retrying.id}#t")
    store.claim(c, 60)
    store.settle(retrying.id, c.token, Failure(ERROR))
    time.sleep(0.3)
    assert mark_dead(store, dead.id, f"m-{dead.id}") is Status.FAILED
    assert mark_dead(store, retrying.id, f"m-{retrying.id}") is Status.FAILED
    assert [h["outcome"] for h in store.get(dead.id).history] == ["lost"]
    assert store.get(retrying.id).retry_at is None
    assert [h["outcome"] for h in store.get(retrying.id).history] == ["failed"]


def test_the_history_keeps_the_latest_attempts(store):
    from tasklane.store.tables import HISTORY_KEPT

    (record,) = store.insert([new()])
    for _ in range(HISTORY_KEPT + 3):
        c = claim(record.id)
        store.claim(c, 60)
        store.settle(record.id, c.token, Failure(ERROR))
    history = store.get(record.id).history
    assert len(history) == HISTORY_KEPT
    assert history[0]["attempt"] == 4 and history[-1]["attempt"] == HISTORY_KEPT + 3


def test_a_retry_runs_now_whatever_its_run_at_was(store):
    """A retried task must not wait for (nor be offered again until) a run_at it once had, nor
    be expired by an expiry its first life had."""
    (record,) = store.insert([new(max_attempts=1)])
    with database.engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET status = 'failed', run_at = now() + interval '30 days', "
                "expires_at = now() - interval '1 minute' WHERE id = :id"
            ),
            {"id": record.id},
        )
    again = store.requeue_failed(record.id)
    assert again.status is Status.PENDING and again.run_at is None
    assert isinstance(store.claim(claim(record.id), 60), Claimed)  # due at once


def test_release_gives_a_claim_back_without_counting_the_run(store):
    (record,) = store.insert([new()])
    c = claim(record.id)
    store.claim(c, 60)
    assert not store.release(record.id, "someone-else#x")
    assert store.release(record.id, c.token)
    row = store.get(record.id)
    assert row.status is Status.QUEUED and row.attempts == 0


def test_idempotent_insert_returns_the_first_task(store):
    first, _, created = store.insert_idempotent(new(), "key-1", "hash-a")
    second, stored_hash, created_again = store.insert_idempotent(new(), "key-1", "hash-b")
    assert created and not created_again
    assert second.id == first.id and stored_hash == "hash-a"


@pytest.mark.parametrize("kind", ["task", "batch"])
def test_an_idempotent_insert_racing_the_prune_of_its_keys_row_inserts_afresh(store, kind):
    """The key's row is pruned between the insert that met it and the read of it: the key is
    free again, and the request creates anew rather than failing."""
    if kind == "task":
        first = store.insert_idempotent(new(), "key-p", "h")[0].id
        table, marker = "tasks", "INSERT INTO tasks"
    else:
        with store.keyed("batch", "key-p", "h", [uuid.uuid4()]):
            pass
        table, marker = "idempotency_keys", "INSERT INTO idempotency_keys"
    armed = [True]

    def prune_in_between(conn, cursor, statement, params, context, executemany):
        if armed and statement.startswith(marker):
            armed.clear()
            with store.engine.begin() as other:  # committed before the next statement
                other.execute(text(f"DELETE FROM {table}"))

    event.listen(store.engine, "after_cursor_execute", prune_in_between)
    try:
        if kind == "task":
            again, _, created = store.insert_idempotent(new(), "key-p", "h")
            assert created and again.id != first
        else:
            fresh = [uuid.uuid4()]
            with store.keyed("batch", "key-p", "h2", fresh) as use:
                assert use.first and use.ids == fresh
    finally:
        event.remove(store.engine, "after_cursor_execute", prune_in_between)
    assert not armed  # the prune did come in between


def test_stale_tasks_are_taken_once(store):
    records = store.insert([new() for _ in range(3)])
    store.mark_queued([records[0].id])
    assert store.claim_stale(3600, 3600) == []
    time.sleep(1.1)
    taken = store.claim_stale(1, 3600)
    assert {r.id for r in taken} == {records[1].id, records[2].id}
    assert store.claim_stale(1, 3600) == []  # touched: not again within the grace


def test_a_queued_task_with_no_delivery_is_resent_only_from_a_quiet_lane(store):
    waiting, due_later = store.insert([new(), new()])
    store.mark_queued([waiting.id, due_later.id])
    with store.engine.begin() as conn:  # past the grace, after the longest back-off too
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '302 seconds'"))
        conn.execute(
            text("UPDATE tasks SET run_at = now() + interval '10 minutes' WHERE id = :id"),
            {"id": due_later.id},
        )
    assert store.claim_stale(1, 1, quiet_lanes=["celery"]) == []  # its lane has a backlog
    assert [r.id for r in store.claim_stale(1, 1, quiet_lanes=["lambda"])] == [waiting.id]


def test_a_queued_task_waiting_out_its_back_off_is_not_stranded(store):
    (record,) = store.insert([new()])
    store.mark_queued([record.id])
    with store.engine.begin() as conn:  # a failed attempt 4 minutes ago: back-off up to 5
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '4 minutes'"))
    assert store.claim_stale(1, 1, quiet_lanes=["lambda"]) == []


def mark_dead(store, task_id, message_id, error=None):
    error = error or {"type": "DeadLetter", "message": "dlq"}
    marked = store.mark_dead(task_id, message_id, error, max_requeues=3)
    return marked[0] if marked else None


def test_the_dead_letter_of_the_message_that_carried_the_attempts_fails_the_task(store):
    a, b = store.insert([new(), new()])
    c = claim(a.id, token="msg-a#1")
    store.claim(c, 60)
    store.settle(a.id, c.token, Failure(ERROR))
    assert mark_dead(store, a.id, "msg-a") is Status.FAILED
    assert store.get(a.id).error["type"] == "ValueError"  # its last error is kept
    cb = claim(b.id, token="msg-b#1")
    store.claim(cb, 60)
    store.settle(b.id, cb.token, "1")
    assert mark_dead(store, b.id, "msg-b") is None
    assert store.get(b.id).status is Status.SUCCEEDED


def test_a_dead_duplicate_spares_a_task_whose_retry_is_still_coming(store):
    """The duplicate exhausted its receives finding the task busy; the message carrying the
    task's attempts is alive (waiting out its back-off) and must still run the retry."""
    (record,) = store.insert([new()])
    carrier = claim(record.id, token="carrier#1")
    store.claim(carrier, 60)
    store.settle(record.id, carrier.token, Failure(ERROR))  # queued, a retry will come
    assert mark_dead(store, record.id, "duplicate") is None
    assert store.get(record.id).status is Status.QUEUED
    retry = claim(record.id, token="carrier#2")
    assert isinstance(store.claim(retry, 60), Claimed)
    assert store.settle(record.id, retry.token, '"done"')[0] is Status.SUCCEEDED


def test_a_dead_duplicate_spares_a_task_running_under_a_live_lease(store):
    (record,) = store.insert([new()])
    c = claim(record.id, token="msg#1")
    store.claim(c, 60)
    assert mark_dead(store, record.id, "msg") is None  # even its own message: the run decides
    assert store.settle(record.id, c.token, '"done"')[0] is Status.SUCCEEDED


def test_a_dead_message_fails_a_task_whose_consumer_died(store):
    (record,) = store.insert([new()])
    store.claim(claim(record.id, token="msg#1"), 0.2)
    time.sleep(0.3)
    assert mark_dead(store, record.id, "msg") is Status.FAILED


def test_a_run_asked_to_stop_whose_message_dead_letters_ends_cancelled(store):
    """Not ``failed``: a retry of failed tasks must never run what someone asked to stop; nor
    does a bulk retry take a failed task that was asked to stop (one from before)."""
    asked, old = store.insert([new(), new()])
    store.claim(claim(asked.id, token="msg#1"), 0.2)
    store.cancel(asked.id)  # running: asked to stop
    time.sleep(0.3)  # its consumer died
    assert mark_dead(store, asked.id, "msg") is Status.CANCELLED
    assert store.get(asked.id).error["type"] == "Cancelled"
    store.claim(claim(old.id, token="old#1"), 60)
    store.cancel(old.id)
    with store.engine.begin() as conn:  # ended failed, as a dead letter left it before
        conn.execute(text("UPDATE tasks SET status = 'failed' WHERE id = :id"), {"id": old.id})
    assert store.requeue_failed_matching(TaskFilter(), 10) == ([], False)


def test_a_claim_given_back_keeps_a_request_to_stop(store):
    """A run cut short by the platform (a lost broker connection, a deadlock) gives its claim
    back; one asked to stop is over instead, and no delivery claims it again."""
    plain, asked = store.insert([new(), new()])
    for record in (plain, asked):
        store.claim(claim(record.id, token=f"{record.id}#1"), 60)
    store.cancel(asked.id)
    assert store.release(plain.id, f"{plain.id}#1") and store.release(asked.id, f"{asked.id}#1")
    assert store.get(plain.id).status is Status.QUEUED
    assert store.get(asked.id).status is Status.CANCELLED
    assert not isinstance(store.claim(claim(asked.id, token=f"{asked.id}#2"), 60), Claimed)


def test_a_task_that_never_ran_goes_back_to_pending_a_bounded_number_of_times(store):
    (record,) = store.insert([new()])
    store.mark_queued([record.id])
    for _ in range(2):
        assert mark_dead(store, record.id, f"m-{uuid.uuid4()}") is Status.PENDING
    assert mark_dead(store, record.id, f"m-{uuid.uuid4()}") is Status.FAILED
    row = store.get(record.id)
    assert row.attempts == 0 and "never ran" in row.error["message"]


def test_the_scheduled_passes_take_no_more_than_their_limit(store):
    """``id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` let the planner re-run the subquery
    for every candidate row (a nested-loop semi-join), taking all of them whatever n."""
    from datetime import UTC, datetime, timedelta

    soon = datetime.now(UTC) + timedelta(hours=2)
    store.insert(
        [NewTask(uuid.uuid4(), "test.echo", "lambda", "1", run_at=soon) for _ in range(5)], 60
    )
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE tasks SET run_at = now() + interval '1 minute'"))
    assert len(store.claim_due(900, limit=3)) == 3
    assert len(store.claim_due(900, limit=3)) == 2
    with database.engine().begin() as conn:  # all pending, left there past the grace
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '1 hour'"))
    assert len(store.claim_stale(60, 900, [], limit=3)) == 3
    assert len(store.claim_stale(60, 900, [], limit=3)) == 2
