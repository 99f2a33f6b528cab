"""The Python API on real Postgres, moto and Celery: .delay(), handles, enqueue inside the
caller's transaction, and transactional tasks whose writes happen exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from tasklane import (
    IdempotencyConflict,
    PayloadTooLarge,
    TaskFailed,
    TaskHandle,
    TasklaneError,
    TaskNotFound,
    UnknownTask,
    database,
    reconciler,
    submit,
    submit_many,
)
from tasklane.executor import Delivery, Executor, delivery_token
from tasklane.store import TaskStore

from tests import tasks
from tests.conftest import ROOT, wait_for
from tests.integration.helpers import consumer_source


def drain(stack, rounds: int = 5) -> int:
    """Run the lambda lane's consumer until its queue is empty; the records it acknowledged."""
    done = 0
    source = consumer_source(stack)
    for _ in range(rounds):
        result = source.poll_once()
        if result is None:
            break
        done += result.deleted
    return done


def task_rows() -> int:
    with database.engine().connect() as conn:
        return conn.execute(text("SELECT count(*) FROM tasks")).scalar_one()


@pytest.fixture
def tx_effects(stack):
    """The rows transactional test tasks write, counted by key."""
    with database.engine().begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tx_effects"))
        conn.execute(text("CREATE TABLE tx_effects (key text)"))

    def count(key: str) -> int:
        with database.engine().connect() as conn:
            sql = text("SELECT count(*) FROM tx_effects WHERE key = :k")
            return conn.execute(sql, {"k": key}).scalar_one()

    return count


# ------------------------------------------------------------------ submitting and following
def test_a_task_is_still_its_function():
    assert tasks.echo({"a": 1}) == {"echo": {"a": 1}}
    assert tasks.echo.__name__ == "echo" and tasks.echo.name == "test.echo"


def test_delay_from_a_plain_process_then_get(stack):
    """A separate Python process with only DATABASE_URL and the queue URLs submits."""
    script = "from tests import tasks; print(tasks.echo.delay({'from': 'a script'}).id)"
    quiet = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_LOG")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=quiet | stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    handle = TaskHandle(uuid.UUID(out.stdout.strip()))  # the id alone: the client is silent
    assert out.stdout == f"{handle.id}\n" and out.stderr == ""
    assert handle.status() == "queued"
    told = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=quiet | stack.env | {"POWERTOOLS_LOG_LEVEL": "INFO"},  # unless asked
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"task submitted"' in told.stdout
    assert drain(stack) == 2
    assert TaskHandle(uuid.UUID(told.stdout.strip().splitlines()[-1])).get(timeout=5)
    assert handle.get(timeout=5) == {"echo": {"from": "a script"}}


def test_get_raises_the_stored_failure_and_times_out(stack):
    failing = tasks.fail.delay({"why": "on purpose"})
    waiting = submit("test.echo", "never consumed")
    with pytest.raises(TimeoutError):
        waiting.get(timeout=0.3, interval=0.1)
    drain(stack, rounds=1)
    assert waiting.get(timeout=1) == {"echo": "never consumed"}
    with database.engine().begin() as conn:  # its last attempt
        conn.execute(text("UPDATE tasks SET max_attempts = 1"))
    wait_for(lambda: drain(stack, rounds=1), 20, what="the failing task's retry")
    with pytest.raises(TaskFailed) as failed:
        failing.get(timeout=5)
    assert failed.value.type == "ValueError" and "on purpose" in failed.value.message
    assert isinstance(failed.value, TasklaneError)


def test_a_task_started_from_inside_a_task_runs(stack):
    parent = tasks.spawn.delay({"children": ["one", "two"]})
    drain(stack, rounds=1)
    children = [TaskHandle(uuid.UUID(i)) for i in parent.get(timeout=5)]
    drain(stack)
    assert [c.get(timeout=5) for c in children] == [{"echo": "one"}, {"echo": "two"}]


def test_a_celery_lane_task_starts_a_lambda_lane_child(stack, celery_worker):
    parent = tasks.spawn_celery.delay({"children": ["from celery"]})
    (child,) = parent.get(timeout=60)
    wait_for(lambda: drain(stack, rounds=1), 20, what="the child")
    assert TaskHandle(uuid.UUID(child)).get(timeout=5) == {"echo": "from celery"}


def test_submit_many_is_one_insert_and_batched_sends(stack):
    from sqlalchemy import event

    statements: list[str] = []
    engine = database.engine()
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        handles = submit_many(
            [("test.echo", i) for i in range(25)] + [("math.primes", {"limit": 5})]
        )
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len([s for s in statements if "INSERT INTO tasks" in s]) == 1
    assert len(handles) == 26 and all(h.status() == "queued" for h in handles)
    assert stack.depth(stack.lambda_queue) == 25 and stack.depth(stack.celery_queue) == 1
    drain(stack, rounds=5)
    assert [h.get(timeout=5) for h in handles[:3]] == [{"echo": 0}, {"echo": 1}, {"echo": 2}]


def test_bad_submissions_raise_one_error_family_and_store_nothing(stack, monkeypatch):
    from tasklane.config import settings

    with pytest.raises(UnknownTask, match=r"no\.such\.task"):
        submit("no.such.task", {})
    with pytest.raises(TasklaneError, match="nested more than 100"):
        tasks.echo.delay(json.loads("[" * 200 + "]" * 200))
    with pytest.raises(TasklaneError, match=r"tasks\[1\]"):
        submit_many([("test.echo", 1), ("no.such.task", 2)])
    monkeypatch.setenv("MAX_PAYLOAD_BYTES", "100")
    settings.cache_clear()
    with pytest.raises(PayloadTooLarge):
        tasks.echo.delay("x" * 200)
    assert task_rows() == 0 and stack.depth(stack.lambda_queue) == 0
    monkeypatch.delenv("MAX_PAYLOAD_BYTES")
    settings.cache_clear()
    first = tasks.echo.apply_async({"n": 1}, idempotency_key="order-7")
    assert tasks.echo.apply_async({"n": 1}, idempotency_key="order-7").id == first.id
    with pytest.raises(IdempotencyConflict):
        tasks.echo.apply_async({"n": 2}, idempotency_key="order-7")
    assert task_rows() == 1


# ------------------------------------------------------------ in the caller's transaction
def test_rolled_back_the_task_never_existed(stack):
    engine = create_engine(stack.env["DATABASE_URL"])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        tasks.echo.delay("not to be", connection=conn)
        raise RuntimeError("the application's own work failed")
    with Session(engine) as session:
        submit("test.echo", "nor this", connection=session)
        session.rollback()
    assert task_rows() == 0 and stack.depth(stack.lambda_queue) == 0
    engine.dispose()


def test_a_savepoint_rolled_back_inside_the_transaction_keeps_the_tasks_send(stack):
    engine = create_engine(stack.env["DATABASE_URL"])
    with Session(engine) as session, session.begin():
        kept = tasks.echo.delay("outer", connection=session)
        with pytest.raises(DBAPIError), session.begin_nested():  # the application's retry
            gone = tasks.echo.delay("inner", connection=session)
            session.execute(text("SELECT 1/0"))
    assert kept.status() == "queued" and stack.depth(stack.lambda_queue) == 1
    with pytest.raises(TaskNotFound):
        gone.status()  # rolled back with its savepoint: it never existed
    with Session(engine) as session, session.begin():  # a savepoint released, not rolled back
        inner = tasks.echo.delay("kept too", connection=session)
        with session.begin_nested():
            session.execute(text("SELECT 1"))
        assert stack.depth(stack.lambda_queue) == 1  # nothing sent before the real commit
    assert inner.status() == "queued" and stack.depth(stack.lambda_queue) == 2
    engine.dispose()


def test_a_session_joined_to_a_connection_transaction_sends_after_the_real_commit(stack):
    """The Session's commit is not the database's: the Connection's transaction is."""
    engine = create_engine(stack.env["DATABASE_URL"])
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        handle = tasks.echo.delay("joined", connection=session)
        session.commit()
        assert stack.depth(stack.lambda_queue) == 0  # nothing committed yet
        outer.commit()
    assert handle.status() == "queued" and stack.depth(stack.lambda_queue) == 1
    engine.dispose()


def test_committed_the_message_goes_out_after_the_commit_not_before(stack):
    engine = create_engine(stack.env["DATABASE_URL"])
    with engine.begin() as conn:
        handle = tasks.echo.delay("with my data", connection=conn)
        assert stack.depth(stack.lambda_queue) == 0  # nothing sent inside the transaction
        assert task_rows() == 0  # nor visible outside it
    assert stack.depth(stack.lambda_queue) == 1 and handle.status() == "queued"
    with Session(engine) as session, session.begin():
        many = submit_many([("test.echo", "a"), ("test.echo", "b")], connection=session)
    assert stack.depth(stack.lambda_queue) == 3
    with engine.connect() as conn:  # an explicit commit, then more work on the connection
        later = tasks.echo.delay("later", connection=conn)
        conn.commit()
        conn.execute(text("SELECT 1"))
    assert stack.depth(stack.lambda_queue) == 4
    drain(stack)
    assert [h.get(timeout=5) for h in (handle, *many, later)] == [
        {"echo": "with my data"},
        {"echo": "a"},
        {"echo": "b"},
        {"echo": "later"},
    ]
    engine.dispose()


def test_a_process_dying_between_commit_and_send_is_covered_by_the_reconciler(stack):

    script = (
        "import os; from sqlalchemy import create_engine; from tests import tasks\n"
        "conn = create_engine(os.environ['DATABASE_URL']).connect()\n"
        "print('ID', tasks.echo.delay('orphan', connection=conn).id, flush=True)\n"
        "conn.commit()\n"
        "os._exit(0)  # dies before the connection is used again or returned: no send\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=os.environ | stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("ID ")]
    handle = TaskHandle(uuid.UUID(line.split()[1]))
    assert handle.status() == "pending" and stack.depth(stack.lambda_queue) == 0
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '5 minutes'"))
    (sent,) = reconciler.reconcile()
    assert sent.id == handle.id
    drain(stack)
    assert handle.get(timeout=5) == {"echo": "orphan"}


def test_the_flask_example_enqueues_with_its_order_or_not_at_all(stack):
    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    try:
        import flask_orders
    finally:
        sys.path.pop(0)
    flask_orders.Base.metadata.create_all(flask_orders.engine)
    client = flask_orders.app.test_client()
    created = client.post("/orders", json={"item": "tea", "quantity": 2})
    assert created.status_code == 201
    refused = client.post("/orders", json={"item": "tea", "quantity": 0})
    assert refused.status_code == 400
    assert task_rows() == 1 and stack.depth(stack.lambda_queue) == 1
    drain(stack)
    handle = TaskHandle(uuid.UUID(created.get_json()["task_id"]))
    assert handle.get(timeout=5) == {"order": created.get_json()["order_id"], "confirmed": True}


def test_a_task_enqueued_late_in_a_long_transaction_is_created_when_enqueued(stack):
    """Not at the transaction's start: listings are newest first by ``created_at``, and a task
    stamped minutes in the past would land behind pages a client has already read."""
    from datetime import timedelta

    with database.engine().begin() as conn:
        began = conn.execute(text("SELECT now()")).scalar_one()
        conn.execute(text("SELECT pg_sleep(0.5)"))
        handle = submit("test.echo", 1, connection=conn)
        (member,) = submit_many([("test.echo", 2)], connection=conn)
    assert handle.record().created_at >= began + timedelta(seconds=0.5)
    assert member.record().created_at >= began + timedelta(seconds=0.5)


# ------------------------------------------------------------------ transactional tasks
def claimed(task: str, payload):
    """Submit and claim one task in this process (the executor, no queue): ready to run."""
    handle = submit(task, payload)
    executor = Executor(TaskStore(database.engine()))
    attempt = executor.claim(Delivery(task, handle.id, delivery_token("m")), 60)
    return handle, executor, attempt


def run_one(task: str, payload):
    handle, executor, attempt = claimed(task, payload)
    return handle, executor, executor.run(attempt)[0]


def test_a_transactional_task_commits_its_writes_with_its_success(stack, tx_effects):
    handle, _, verdict = run_one("test.tx_write", {"key": "k1"})
    assert verdict.outcome == "succeeded" and tx_effects("k1") == 1
    assert handle.get(timeout=1) == {"wrote": "k1"}


def test_a_transactional_task_that_raises_leaves_no_writes(stack, tx_effects):
    handle, _, verdict = run_one("test.tx_write", {"key": "k2", "fail": True})
    assert verdict.outcome == "retry" and tx_effects("k2") == 0
    assert handle.record().error["type"] == "RuntimeError"


def test_a_transactional_run_that_lost_its_claim_leaves_no_writes(stack, tx_effects):
    """Its lease ran out mid-run and another delivery took the task: the late run's writes
    roll back with its outcome; only the run holding the claim writes."""
    gate = tasks.GATES["slow"] = threading.Event()
    handle = submit("test.tx_write", {"key": "k3", "gate": "slow"})
    executor = Executor(TaskStore(database.engine()))
    first = executor.claim(Delivery("test.tx_write", handle.id, "m1#a"), 0.2)
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(executor.run(first)[0]))
    runner.start()
    time.sleep(0.4)  # the first run has written, and waits at its gate; its lease expires
    del tasks.GATES["slow"]
    second = executor.claim(Delivery("test.tx_write", handle.id, "m2#b"), 60)
    assert executor.run(second)[0].outcome == "succeeded"
    gate.set()
    runner.join(10)
    assert outcome[0].reason == "claim lost"
    assert tx_effects("k3") == 1 and handle.record().attempts == 2


def test_postgres_lost_before_the_commit_leaves_nothing_and_the_next_delivery_runs_clean(
    stack, tx_effects
):
    engine = database.engine()
    dialect, commit = engine.dialect, engine.dialect.do_commit
    state = {"armed": True}

    def connection_lost_before_commit(connection):
        if state.pop("armed", False):
            connection.invalidate()  # the server never sees the COMMIT
            raise dialect.loaded_dbapi.InterfaceError("network error")
        commit(connection)

    handle, executor, attempt = claimed("test.tx_write", {"key": "k4"})
    dialect.do_commit = connection_lost_before_commit
    try:
        verdict = executor.run(attempt)[0]
    finally:
        dialect.do_commit = commit
    assert verdict.outcome == "retry" and tx_effects("k4") == 0
    assert (handle.status(), handle.record().attempts) == ("queued", 0)  # given back, uncounted
    again = executor.claim(Delivery("test.tx_write", handle.id, delivery_token("m")), 60)
    assert executor.run(again)[0].outcome == "succeeded" and tx_effects("k4") == 1


def test_a_cancel_asked_of_a_run_that_loses_a_deadlock_is_kept(stack, tx_effects):
    """Asked to stop while running, the run's transaction then loses a deadlock: its claim is
    given back, and with it the request: it ends ``cancelled`` and no delivery runs it."""
    gate = tasks.GATES["asked"] = threading.Event()
    handle, executor, attempt = claimed(
        "test.tx_write", {"key": "k6", "gate": "asked", "deadlock": 1}
    )
    verdicts: list = []
    runner = threading.Thread(target=lambda: verdicts.append(executor.run(attempt)[0]))
    runner.start()
    wait_for(lambda: handle.status() == "running", 10, what="the run")
    assert handle.cancel() == "running"  # asked to stop
    del tasks.GATES["asked"]
    gate.set()
    runner.join(10)
    assert verdicts[0].outcome == "retry" and tx_effects("k6") == 0
    assert handle.status() == "cancelled"
    again = executor.claim(Delivery("test.tx_write", handle.id, delivery_token("m")), 60)
    assert again.outcome == "done"  # the next delivery acknowledges it, unrun
    assert handle.status() == "cancelled" and tx_effects("k6") == 0


def test_a_transactional_statement_is_bounded_by_the_tasks_limit_not_the_socket(stack):
    """The engine's socket timeout (1 s here) is for the store's own statements: a run's
    statement may take up to the task's time limit, and the server stops one that would
    outlast it, rather than run on after the client gave up."""
    from tasklane.config import settings

    short = database.make_engine(settings(), socket_timeout=1)
    executor = Executor(TaskStore(short))
    try:
        for sleep, limit, ends in ((2, 10, "succeeded"), (30, 2, "retry")):
            handle = submit("test.tx_sleep", {"sleep": sleep})
            attempt = executor.claim(Delivery("test.tx_sleep", handle.id, delivery_token("m")), 60)
            assert executor.run(attempt, limit_s=limit)[0].outcome == ends
        assert "statement timeout" in handle.record().error["message"]
        with database.engine().connect() as conn:  # nothing of it still runs on the server
            running = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            assert conn.execute(text(running)).scalar_one() == 0
    finally:
        short.dispose()


def test_a_lost_reply_to_a_transactional_commit_is_not_run_again(stack, tx_effects):
    engine = database.engine()
    dialect, commit = engine.dialect, engine.dialect.do_commit
    state = {"armed": True}

    def commit_then_lose_the_reply(connection):
        commit(connection)
        if state.pop("armed", False):
            raise dialect.loaded_dbapi.InterfaceError("network error")

    handle, executor, attempt = claimed("test.tx_write", {"key": "k5"})
    dialect.do_commit = commit_then_lose_the_reply
    try:
        verdict = executor.run(attempt)[0]
    finally:
        dialect.do_commit = commit
    assert verdict.outcome == "succeeded" and tx_effects("k5") == 1
    assert handle.get(timeout=1) == {"wrote": "k5"}


def test_duplicate_deliveries_of_a_transactional_task_write_once(stack, tx_effects):
    handle = submit("test.tx_write", {"key": "k6"})
    (message,) = stack.receive(stack.lambda_queue)
    for _ in range(3):
        stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=message["Body"])
    wait_for(lambda: drain(stack) >= 3, 20, what="the copies")
    assert tx_effects("k6") == 1 and handle.get(timeout=1) == {"wrote": "k6"}


def test_a_transactional_task_in_the_celery_lane(stack, celery_worker, tx_effects):
    handle = submit("test.tx_write_celery", {"key": "k7"})
    assert handle.get(timeout=60) == {"wrote": "k7"} and tx_effects("k7") == 1
    failing = submit("test.tx_write_celery", {"key": "k8", "fail": True})
    wait_for(lambda: failing.record().attempts >= 1 and failing.status() != "running", 60)
    assert tx_effects("k8") == 0


def test_countdown_and_eta_hold_a_task_back_without_holding_a_message(stack):
    from datetime import UTC, datetime, timedelta

    soon = tasks.echo.apply_async("soon", countdown=2)
    assert soon.status() == "queued" and soon.record().run_at is not None
    assert drain(stack, rounds=1) == 0  # delayed on the queue
    wait_for(lambda: drain(stack, rounds=1), 15, what="the delayed message")
    record = soon.record()
    assert record.result == {"echo": "soon"}
    later = submit("test.echo", "later", eta=datetime.now(UTC) + timedelta(days=30))
    assert later.status() == "scheduled" and stack.depth(stack.lambda_queue) == 0
    with pytest.raises(TasklaneError, match="not both"):
        tasks.echo.apply_async(1, countdown=1, eta=datetime.now(UTC))
    with pytest.raises(TasklaneError, match="time zone"):
        tasks.echo.apply_async(1, eta=datetime.now())
