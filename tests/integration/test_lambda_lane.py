"""The lambda lane: the consumer handler on moto SQS, via the emulated event source."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from sqlalchemy import event, text
from tasklane import database, reconciler
from tasklane.local.events import queue_arn
from tasklane.store import default_store

from tests.conftest import MAX_RECEIVES, wait_for
from tests.integration.helpers import call_api, consumer_source, get_task, handler, submit


def source(stack, function="consumer", url=None, **kw):
    return consumer_source(stack, function, url, **kw)


def get(task_id: str) -> dict:
    return get_task(task_id)


def test_one_failure_in_a_batch_of_ten_is_the_only_one_returned(stack):
    ok = [submit("test.echo", {"i": i}) for i in range(9)]
    bad = submit("test.fail", {"why": "test"})
    result = source(stack).poll_once()
    assert result.records == 10 and result.deleted == 9 and len(result.failed_ids) == 1
    for task_id in ok:
        task = get(task_id)
        assert task["status"] == "succeeded" and task["attempts"] == 1
        assert task["result"] == {"echo": {"i": ok.index(task_id)}}
    failed = get(bad)
    assert failed["status"] == "queued" and failed["attempts"] == 1
    traceback = failed["error"].pop("traceback")
    assert failed["error"] == {"type": "ValueError", "message": "always fails: test"}
    assert "Traceback" in traceback and "ValueError: always fails: test" in traceback
    assert stack.depth(stack.lambda_queue) == 1  # not acknowledged


def test_a_failing_task_comes_back_then_dead_letters_and_ends_failed(stack):
    bad = submit("test.fail", {})
    consumer = source(stack)
    counts = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and stack.depth(stack.lambda_queue):
        result = consumer.poll_once()
        if result:
            counts.append(get(bad)["attempts"])
    assert counts == list(range(1, MAX_RECEIVES + 1))  # attempts counts deliveries
    assert get(bad)["status"] == "queued"  # not failed until the DLQ says so
    dead = source(stack, "deadletter", url=stack.lambda_dlq)
    result = wait_for(dead.poll_once, 10, what="dead letter")
    assert result.deleted == 1
    task = get(bad)
    assert task["status"] == "failed" and task["error"]["type"] == "ValueError"


def test_retry_succeeds_on_a_later_delivery(stack, tmp_path):
    task_id = submit("test.flaky", {"marker": str(tmp_path / "runs"), "fail_times": 1})
    consumer = source(stack)
    first = consumer.poll_once()
    assert first.failed_ids
    wait_for(lambda: consumer.poll_once(), 20, what="redelivery")
    task = get(task_id)
    assert task["status"] == "succeeded" and task["attempts"] == 2 and task["result"] == {"runs": 2}
    assert task["error"] is None


def test_max_attempts_ends_the_task_without_the_dlq(stack):
    task_id = submit("test.fail_twice", {})
    consumer = source(stack)
    consumer.poll_once()
    wait_for(lambda: consumer.poll_once(), 20, what="second delivery")
    task = get(task_id)
    assert task["status"] == "failed" and task["attempts"] == 2
    assert stack.depth(stack.lambda_queue) == 0  # acknowledged on the last attempt
    assert stack.depth(stack.lambda_dlq) == 0


def test_poison_messages_fail_fast_to_the_dlq_and_spare_the_batch(stack):
    ok = submit("test.echo", 1)
    missing_row = str(uuid.uuid4())
    from tasklane import broker

    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody="definitely not celery")
    stack.sqs.send_message(
        QueueUrl=stack.lambda_queue,
        MessageBody=broker.message_body("test.echo", missing_row, "tl-lambda"),
    )
    stack.sqs.send_message(
        QueueUrl=stack.lambda_queue,
        MessageBody=broker.message_body("no.such.task", ok, "tl-lambda"),
    )
    result = source(stack).poll_once()
    assert result.records == 4 and result.deleted == 4 and result.failed_ids == []
    assert get(ok)["status"] == "succeeded" and get(ok)["attempts"] == 1
    dead = stack.receive(stack.lambda_dlq)
    reasons = sorted(
        m["MessageAttributes"]["tasklane-dead-letter-reason"]["StringValue"] for m in dead
    )
    assert len(reasons) == 3
    assert any("no task row" in r for r in reasons)
    assert any("no.such.task" in r for r in reasons)
    assert any("base64" in r or "JSON" in r for r in reasons)


#: 10 KB of brackets: more nesting than any JSON decoder survives (RecursionError).
TOO_DEEP = '{"body": ' + "[" * 5000 + "]" * 5000 + "}"


def test_a_message_too_deep_to_decode_is_poison_and_spares_its_batch(stack):
    ok = submit("test.echo", 1)
    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=TOO_DEEP)
    result = source(stack).poll_once()
    assert result.error is None and result.records == 2 and result.deleted == 2
    assert get(ok)["status"] == "succeeded"
    (dead,) = stack.receive(stack.lambda_dlq)
    reason = dead["MessageAttributes"]["tasklane-dead-letter-reason"]["StringValue"]
    assert "nested too deeply" in reason
    # and the dead-letter function drops it as undecodable rather than failing its batch
    stack.sqs.change_message_visibility(
        QueueUrl=stack.lambda_dlq, ReceiptHandle=dead["ReceiptHandle"], VisibilityTimeout=0
    )
    outcome = source(stack, function="deadletter", url=stack.lambda_dlq).poll_once()
    assert outcome.error is None and outcome.deleted == 1


def test_without_a_dlq_poison_is_returned_not_lost(stack, monkeypatch):
    from tasklane.config import settings

    monkeypatch.delenv("LAMBDA_DLQ_URL")
    settings.cache_clear()
    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody="garbage")
    result = source(stack).poll_once()
    assert len(result.failed_ids) == 1 and stack.depth(stack.lambda_queue) == 1


def test_duplicate_deliveries_run_once(stack, tmp_path):
    ledger = tmp_path / "ledger"
    task_id = submit("test.ledger", {"ledger": str(ledger), "n": 1})
    (message,) = stack.receive(stack.lambda_queue)
    # SQS at-least-once: the same message twice in one batch, and again after it succeeded
    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=message["Body"])
    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=message["Body"])
    consumer = source(stack)
    first = consumer.poll_once()
    assert first.records == 2 and first.deleted == 2  # the twin finds it done: acknowledged
    deadline = time.monotonic() + 30
    while stack.depth(stack.lambda_queue) and time.monotonic() < deadline:
        consumer.poll_once()  # the twin and the original come back and are acknowledged
    assert stack.depth(stack.lambda_queue) == 0
    assert ledger.read_text().splitlines() == ["1"]
    assert get(task_id)["status"] == "succeeded"


def test_a_batch_costs_one_round_trip_plus_one_per_record(stack):
    for i in range(10):
        submit("test.echo", i)
    statements: list[str] = []
    engine = database.engine()
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        result = source(stack).poll_once()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert result.deleted == 10
    assert len(statements) <= 10 + 2, statements


def test_stock_celery_send_task_runs_in_the_lambda_lane(stack):
    """Interop: a stock Celery producer's message for an existing row runs in our consumer."""
    from celery import Celery
    from tasklane.store import NewTask, TaskStore

    task_id = uuid.uuid4()
    TaskStore(database.engine()).insert(
        [NewTask(task_id, "test.echo", "lambda", json.dumps({"from": "celery"}))]
    )
    app = Celery("stock", broker="sqs://", set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "predefined_queues": {"tl-lambda": {"url": stack.lambda_queue}},
        },
        task_serializer="json",
    )
    app.send_task("test.echo", args=[str(task_id)], task_id=str(task_id), queue="tl-lambda")
    result = wait_for(lambda: source(stack).poll_once(), 20, what="celery's message")
    assert result.deleted == 1
    task = get(str(task_id))
    assert task["status"] == "succeeded" and task["result"] == {"echo": {"from": "celery"}}


def test_payloads_of_several_megabytes_work_end_to_end(stack):
    data = "x" * (3 * 1024 * 1024)
    task_id = submit("test.size", {"data": data})
    (message,) = stack.receive(stack.lambda_queue, max_messages=1)
    assert len(message["Body"]) < 2048  # the claim check, not the payload
    stack.sqs.change_message_visibility(
        QueueUrl=stack.lambda_queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    wait_for(lambda: source(stack).poll_once(), 10, what="big task")
    assert get(task_id)["result"] == {"chars": len(data)}


def test_database_down_returns_the_batch_and_marks_nothing(stack, monkeypatch):
    from tasklane.config import settings
    from tasklane.local.postgres import free_port

    ids = [submit("test.echo", i) for i in range(3)]
    monkeypatch.setenv("DATABASE_URL", f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/x")
    settings.cache_clear()
    database.reset()
    default_store.cache_clear()
    try:
        result = source(stack, timeout=7).poll_once()  # waits out the outage until 5 s remain
    finally:
        monkeypatch.undo()
        settings.cache_clear()
        database.reset()
        default_store.cache_clear()
    assert len(result.failed_ids) == 3 and result.deleted == 0
    with database.engine().connect() as conn:
        statuses = conn.execute(text("SELECT status, attempts FROM tasks")).all()
    assert sorted(statuses) == [("queued", 0)] * 3
    assert all(get(i)["status"] == "queued" for i in ids)


@pytest.mark.parametrize("remaining_ms", [1000])
def test_records_are_returned_when_time_runs_short(stack, remaining_ms):
    from tasklane.local.events import LambdaContext, sqs_event

    for i in range(3):
        submit("test.echo", i)
    messages = stack.receive(stack.lambda_queue)
    context = LambdaContext(function_name="consumer", timeout_seconds=remaining_ms / 1000)
    response = handler("consumer")(sqs_event(messages, queue_arn("tl-lambda")), context)
    assert len(response["batchItemFailures"]) == len(messages) == 3
    rows = stack.query("SELECT status, attempts FROM tasks")
    assert sorted(tuple(r) for r in rows) == [("queued", 0)] * 3  # claims given back, not spent


def deleted(result) -> int:
    """Messages a poll acknowledged (0 when it found none)."""
    return result.deleted if result else 0


def consumer_process(stack, timeout: float):
    """The consumer function in a process of its own, killed if it runs past ``timeout``."""
    import os

    from tasklane.local.runtime import FunctionPool

    from tests.integration.helpers import ROOT

    return FunctionPool(
        ROOT / "functions" / "consumer",
        "app.lambda_handler",
        "consumer",
        os.environ | stack.env,
        timeout=timeout,
        memory=128,
        layers=[],
        size=1,
    )


def test_a_slow_record_is_stopped_in_time_and_the_rest_return_unclaimed(stack):
    """A run that would outlast the invocation is stopped at the time reserve and recorded as a
    failed attempt; the records after it go back without a claim, so no run is counted that
    did not happen, and the invocation is not killed."""
    from tasklane.local.events import sqs_event

    slow = submit("test.sleep", {"seconds": 30})
    rest = [submit("test.echo", i) for i in range(2)]
    messages = stack.receive(stack.lambda_queue)
    function = consumer_process(stack, timeout=7)
    try:
        response = function(sqs_event(messages, queue_arn("tl-lambda")))
    finally:
        function.close()
    assert len(response["batchItemFailures"]) == 3
    stopped = get(slow)
    assert stopped["status"] == "queued" and stopped["attempts"] == 1
    assert stopped["error"]["type"] == "TimeLimitExceeded"
    assert [(get(t)["status"], get(t)["attempts"]) for t in rest] == [("queued", 0)] * 2


def test_a_record_that_ignores_its_limit_gets_the_invocation_killed_and_nothing_else_counted(
    stack,
):
    from tasklane.local.events import sqs_event
    from tasklane.local.runtime import InvocationTimeout

    stuck = submit("test.stubborn", {"seconds": 30})
    rest = [submit("test.echo", i) for i in range(2)]
    messages = stack.receive(stack.lambda_queue)
    function = consumer_process(stack, timeout=6)
    try:
        with pytest.raises(InvocationTimeout):
            function(sqs_event(messages, queue_arn("tl-lambda")))
    finally:
        function.close()
    assert (get(stuck)["status"], get(stuck)["attempts"]) == ("running", 1)  # lease runs out
    assert [(get(t)["status"], get(t)["attempts"]) for t in rest] == [("queued", 0)] * 2


def test_a_payload_no_decoder_survives_fails_its_task_once_and_spares_the_batch(stack):
    """Stored by hand (the API refuses it now): the task fails for good on its first delivery;
    it is not looped through the DLQ and the reconciler, and the batch's other records run."""
    before = submit("test.echo", "before")
    deep = submit("test.echo", 1)
    after = submit("test.echo", "after")
    with database.engine().begin() as conn:
        conn.execute(
            text("UPDATE tasks SET payload = CAST(:p AS jsonb) WHERE id = :id"),
            {"p": "[" * 3000 + "]" * 3000, "id": uuid.UUID(deep)},
        )
    result = source(stack).poll_once()
    assert result.records == 3 and result.deleted == 3
    failed = get(deep)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["type"] == "PayloadUnreadable"
    assert get(before)["status"] == get(after)["status"] == "succeeded"
    assert get(after)["result"] == {"echo": "after"}  # the next read was not poisoned


def test_a_task_this_consumer_does_not_know_yet_is_left_for_one_that_does(stack, monkeypatch):
    """A deploy in progress: the producer knows a task the consumer's registry lacks. The row
    exists, so the message is not poison: it is left (with a back-off), never failed."""
    from tasklane import registry

    task_id = submit("test.echo", "new code")
    spec = registry._tasks.pop("test.echo")
    try:
        result = source(stack).poll_once()
    finally:
        registry._tasks["test.echo"] = spec
    # offered again in a minute as a fresh message, spending none of this message's receives
    assert result.deleted == 1 and not result.failed_ids
    assert (get(task_id)["status"], get(task_id)["attempts"]) == ("queued", 0)
    assert stack.depth(stack.lambda_dlq) == 0 and stack.depth(stack.lambda_queue) == 1
    message = stack.sqs.receive_message(QueueUrl=stack.lambda_queue, WaitTimeSeconds=0)
    assert "Messages" not in message  # delayed, not hot-looping


def unknown_since(task_id: str):
    with database.engine().connect() as conn:
        return conn.execute(
            text("SELECT unknown_since FROM tasks WHERE id = :id"), {"id": uuid.UUID(task_id)}
        ).scalar_one()


def poll_until(consumer, done, timeout: float = 30, also=None) -> None:
    """Run the consumer (and ``also``, e.g. the reconciler) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        consumer.poll_once()
        if also is not None:
            also()


def test_a_task_no_consumer_knows_ends_failed_after_the_patience(stack, monkeypatch):
    """A deploy rolled back: the row exists, no consumer has the code. It is offered again for
    the patience (an hour; 4 s here), then ends failed. The reconciler runs all along: its
    stranded sweep touched updated_at, from which the patience was measured, so the task was
    offered for ever, with more copies of its message each time."""
    from tasklane import executor, registry
    from tasklane.config import settings

    monkeypatch.setattr(executor, "UNKNOWN_HERE_BACKOFF_S", 1)
    monkeypatch.setattr(executor, "UNKNOWN_HERE_PATIENCE_S", 4)
    monkeypatch.setenv("QUEUED_GRACE_SECONDS", "1")
    monkeypatch.setenv("PENDING_GRACE_SECONDS", "1")
    # the stranded sweep's margin
    monkeypatch.setattr("tasklane.store.maintenance.MAX_BACKOFF_S", 0)
    settings.cache_clear()
    task_id = submit("test.echo", "gone")
    monkeypatch.delitem(registry._tasks, "test.echo")
    consumer = source(stack, poll_wait=1)
    poll_until(consumer, lambda: get(task_id)["status"] != "queued", 60, reconciler.reconcile)
    failed = get(task_id)
    assert failed["status"] == "failed" and failed["attempts"] == 0
    assert failed["error"]["type"] == "UnknownTask"
    poll_until(consumer, lambda: stack.depth(stack.lambda_queue) == 0)  # no copy circulates
    assert stack.depth(stack.lambda_dlq) == 0


def test_a_task_that_ran_once_and_is_then_unknown_ends_failed_and_a_retry_resumes_it(
    stack, monkeypatch, tmp_path
):
    """Its first run failed; then its code was rolled back. The fresh messages offering it again
    are not the one its claim recorded, so their dead letters could never end it: the patience
    does. Once the code is back, a retry runs it."""
    from tasklane import executor, registry

    monkeypatch.setattr(executor, "UNKNOWN_HERE_BACKOFF_S", 1)
    task_id = submit("test.flaky", {"marker": str(tmp_path / "runs"), "fail_times": 1})
    consumer = source(stack, poll_wait=1)
    assert consumer.poll_once().failed_ids  # claimed, failed: queued for its retry
    spec = registry._tasks.pop("test.flaky")
    try:
        poll_until(consumer, lambda: unknown_since(task_id) is not None, 20)
        assert get(task_id)["status"] == "queued"  # offered again, within the patience
        monkeypatch.setattr(executor, "UNKNOWN_HERE_PATIENCE_S", 0)  # an hour later
        poll_until(consumer, lambda: get(task_id)["status"] == "failed", 20)
    finally:
        registry._tasks["test.flaky"] = spec
    assert get(task_id)["error"]["type"] == "UnknownTask"
    assert call_api("POST", f"/tasks/{task_id}/retry")[0] == 202
    poll_until(consumer, lambda: get(task_id)["status"] == "succeeded", 30)
    assert get(task_id)["attempts"] == 1  # a retry starts its attempts again


def test_a_lost_reply_to_a_retry_outcome_leaves_the_message_for_the_retry(stack, tmp_path):
    """The retry's commit succeeded but its reply was lost (a failover). Writing it again must
    recognise the committed outcome; reading that as a lost claim acknowledged the message and
    stranded the task, queued, with nothing left to run it."""
    task_id = submit("test.flaky", {"marker": str(tmp_path / "runs"), "fail_times": 1})
    engine = database.engine()
    dialect = engine.dialect
    commit, execute, last = dialect.do_commit, dialect.do_execute, {"sql": ""}

    def remember(conn, cursor, statement, *args):
        last["sql"] = statement

    def lose_the_reply_of_the_failure():
        recorded_failure = last["sql"].startswith("UPDATE tasks SET") and "error=" in last["sql"]
        if recorded_failure and not last.get("done"):
            last["done"] = True
            raise dialect.loaded_dbapi.InterfaceError("network error")

    def commit_then_lose_the_reply(dbapi_connection):
        commit(dbapi_connection)
        lose_the_reply_of_the_failure()

    def execute_then_lose_the_reply(cursor, statement, parameters, context=None):
        execute(cursor, statement, parameters, context)
        if context is not None and context.root_connection.connection.dbapi_connection.autocommit:
            lose_the_reply_of_the_failure()  # a statement in autocommit is its own commit

    event.listen(engine, "before_cursor_execute", remember)
    dialect.do_commit, dialect.do_execute = commit_then_lose_the_reply, execute_then_lose_the_reply
    try:
        first = source(stack).poll_once()
    finally:
        dialect.do_commit, dialect.do_execute = commit, execute
        event.remove(engine, "before_cursor_execute", remember)
    assert last.get("done"), "the fault was not injected"
    assert first.failed_ids and first.deleted == 0  # left for its retry, not acknowledged
    assert (get(task_id)["status"], get(task_id)["attempts"]) == ("queued", 1)
    wait_for(lambda: deleted(source(stack).poll_once()), 20, what="the retry")
    assert get(task_id)["status"] == "succeeded" and get(task_id)["attempts"] == 2


def test_the_dead_letter_of_a_duplicate_spares_a_task_whose_retry_is_coming(stack, tmp_path):
    """A copy of the message dies in the DLQ (it kept finding the task busy) while the message
    that carries the task's attempts waits out its back-off: the task must not be failed."""
    task_id = submit("test.flaky", {"marker": str(tmp_path / "runs"), "fail_times": 1})
    (message,) = stack.receive(stack.lambda_queue)
    stack.sqs.change_message_visibility(
        QueueUrl=stack.lambda_queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    assert source(stack).poll_once().failed_ids  # attempt 1 failed: a retry will come
    stack.sqs.send_message(QueueUrl=stack.lambda_dlq, MessageBody=message["Body"])  # the copy
    dead = source(stack, "deadletter", url=stack.lambda_dlq)
    assert wait_for(dead.poll_once, 10, what="the dead copy").deleted == 1
    assert get(task_id)["status"] == "queued"
    wait_for(lambda: deleted(source(stack).poll_once()), 20, what="the retry")
    assert get(task_id)["status"] == "succeeded"


def stock_celery(stack):
    """A stock Celery producer on the lambda lane's queue (as another service would run it)."""
    from celery import Celery

    app = Celery("stock", broker="sqs://", set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "predefined_queues": {"tl-lambda": {"url": stack.lambda_queue}},
        },
        task_serializer="json",
    )
    return app


def stored_task(task: str, payload) -> uuid.UUID:
    from tasklane.store import NewTask, TaskStore

    task_id = uuid.uuid4()
    TaskStore(database.engine()).insert([NewTask(task_id, task, "lambda", json.dumps(payload))])
    return task_id


def test_a_stock_countdown_is_honoured_without_holding_the_message(stack, tmp_path):
    """countdown=3: the consumer acknowledges the message and sends the task again delayed to
    its eta (nothing waits in memory); it runs when due, not before."""
    ledger = tmp_path / "ledger"
    task_id = stored_task("test.ledger", {"ledger": str(ledger), "n": 1})
    sent = stock_celery(stack).send_task(
        "test.ledger", args=[str(task_id)], task_id=str(task_id), countdown=3, queue="tl-lambda"
    )
    assert sent.id == str(task_id)
    consumer = source(stack)
    first = wait_for(consumer.poll_once, 10, what="the countdown message")
    assert first.deleted == 1 and not ledger.exists()  # acknowledged, not run
    (row,) = stack.query("SELECT status, run_at, attempts FROM tasks")
    assert row.status == "queued" and row.attempts == 0 and row.run_at is not None
    wait_for(lambda: deleted(consumer.poll_once()), 15, what="the delayed message")
    (done,) = stack.query("SELECT status, started_at, run_at FROM tasks")
    assert done.status == "succeeded" and done.started_at >= done.run_at
    assert ledger.read_text().splitlines() == ["1"]


def test_a_stock_eta_far_ahead_is_scheduled_and_sent_when_due(stack, tmp_path):
    from datetime import UTC, datetime, timedelta

    task_id = stored_task("test.echo", "later")
    eta = datetime.now(UTC) + timedelta(hours=2)
    stock_celery(stack).send_task(
        "test.echo", args=[str(task_id)], task_id=str(task_id), eta=eta, queue="tl-lambda"
    )
    assert wait_for(source(stack).poll_once, 10, what="the eta message").deleted == 1
    assert get(str(task_id))["status"] == "scheduled"
    assert reconciler.reconcile() == [] and stack.depth(stack.lambda_queue) == 0  # not yet due
    with database.engine().begin() as conn:  # two hours pass
        conn.execute(text("UPDATE tasks SET run_at = now() + interval '2 seconds'"))
    (sent,) = reconciler.reconcile()
    assert sent.status == "queued"
    assert reconciler.reconcile() == []  # sent once
    wait_for(lambda: deleted(source(stack).poll_once()), 15, what="the due task")
    assert get(str(task_id))["result"] == {"echo": "later"}


def test_a_stock_eta_past_the_calendars_edge_is_poison_and_its_task_fails(stack):
    """It cannot be kept nor run when it says: the DLQ at once (not a loop of receives), and
    its task ``failed``, never sent again without the eta (it would run early)."""

    task_id = stored_task("test.echo", "never")
    stock_celery(stack).send_task(
        "test.echo",
        args=[str(task_id)],
        task_id=str(task_id),
        queue="tl-lambda",
        headers={"eta": "9999-12-31T23:59:59-14:00"},
    )
    assert wait_for(source(stack).poll_once, 10, what="the message").deleted == 1
    assert stack.depth(stack.lambda_dlq) == 1
    task = get(str(task_id))
    assert task["status"] == "failed" and "eta must lie between" in task["error"]["message"]
    assert reconciler.reconcile() == [] and stack.depth(stack.lambda_queue) == 0


def test_an_expired_stock_message_is_acknowledged_without_running(stack, tmp_path):
    from datetime import UTC, datetime, timedelta

    ledger = tmp_path / "ledger"
    task_id = stored_task("test.ledger", {"ledger": str(ledger), "n": 1})
    stock_celery(stack).send_task(
        "test.ledger",
        args=[str(task_id)],
        task_id=str(task_id),
        expires=datetime.now(UTC) - timedelta(seconds=1),
        queue="tl-lambda",
    )
    assert wait_for(source(stack).poll_once, 10, what="the message").deleted == 1
    task = get(str(task_id))
    assert task["status"] == "cancelled" and task["error"]["type"] == "TaskExpired"
    assert task["attempts"] == 0 and not ledger.exists()


def test_a_stock_expires_still_holds_after_its_eta_deferred_the_task(stack, tmp_path):
    """countdown=2, expires in a minute: the first delivery defers the task, and the message
    that runs it later is tasklane's own, without the expires header. The expiry must stay
    with the task: a lane that reaches it late (here: time moved past it) must not run it."""
    from datetime import UTC, datetime, timedelta

    ledger = tmp_path / "ledger"
    task_id = stored_task("test.ledger", {"ledger": str(ledger), "n": 1})
    stock_celery(stack).send_task(
        "test.ledger",
        args=[str(task_id)],
        task_id=str(task_id),
        countdown=2,
        expires=datetime.now(UTC) + timedelta(minutes=1),
        queue="tl-lambda",
    )
    consumer = source(stack)
    assert wait_for(consumer.poll_once, 10, what="the countdown message").deleted == 1
    (row,) = stack.query("SELECT status, expires_at FROM tasks")
    assert row.status == "queued" and row.expires_at is not None
    with database.engine().begin() as conn:  # a backlog: the lane reaches it a minute late
        conn.execute(text("UPDATE tasks SET expires_at = now() - interval '1 second'"))
    wait_for(lambda: deleted(consumer.poll_once()), 15, what="the delayed message")
    task = get(str(task_id))
    assert task["status"] == "cancelled" and task["error"]["type"] == "TaskExpired"
    assert task["attempts"] == 0 and not ledger.exists()


def test_a_result_postgres_cannot_store_fails_the_task_once(stack, tmp_path):
    """jsonb refuses \\u0000. The run's result is what it is: running it again (and repeating
    its side effects) would make the same one, so the task fails at once."""
    ledger = tmp_path / "ledger"
    task_id = submit("test.nul_result", {"ledger": str(ledger)})
    result = source(stack).poll_once()
    assert result.deleted == 1 and not result.failed_ids
    task = get(task_id)
    assert task["status"] == "failed" and task["attempts"] == 1
    assert "cannot be stored" in task["error"]["message"]
    assert ledger.read_text().splitlines() == ["ran"]


@pytest.mark.parametrize("task", ["test.nan_result", "test.nul_result_tx"])
def test_a_result_that_cannot_be_stored_fails_at_once_in_every_kind_of_task(stack, task):
    """NaN is not JSON; \\u0000 is not what jsonb holds, also through a transactional run's
    own transaction (whose writes roll back with it). No retry would make another result."""
    with database.engine().begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS tx_effects (key text)"))
        conn.execute(text("DELETE FROM tx_effects"))
    task_id = submit(task, {})
    result = source(stack).poll_once()
    assert result.deleted == 1 and not result.failed_ids
    failed = get(task_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["type"] in ("ResultNotStorable", "InvalidRequest")
    assert "SELECT" not in failed["error"]["message"] and "UPDATE" not in failed["error"]["message"]
    with database.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tx_effects")).scalar_one() == 0
