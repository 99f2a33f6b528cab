"""The lambda lane: the consumer handler on moto SQS, via the emulated event source."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from sqlalchemy import event, text
from tasklane import database
from tasklane.local.events import queue_arn

from tests.conftest import MAX_RECEIVES, wait_for
from tests.integration.helpers import consumer_source, get_task, handler, submit


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
    assert failed["error"] == {"type": "ValueError", "message": "always fails: test"}
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
    assert first.records == 2 and len(first.failed_ids) == 1  # the twin is busy, put back
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
    from tasklane import service
    from tasklane.config import settings
    from tasklane.local.postgres import free_port

    ids = [submit("test.echo", i) for i in range(3)]
    monkeypatch.setenv("DATABASE_URL", f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/x")
    settings.cache_clear()
    database.reset()
    service.default_store.cache_clear()
    try:
        result = source(stack, timeout=7).poll_once()  # waits out the outage until 5 s remain
    finally:
        monkeypatch.undo()
        settings.cache_clear()
        database.reset()
        service.default_store.cache_clear()
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
