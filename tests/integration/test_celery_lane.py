"""The celery lane: a real ``celery -A tasklane.worker worker`` process on moto's SQS server."""

from __future__ import annotations

import json
import time
import uuid

from tests.conftest import MAX_RECEIVES, Worker, wait_for
from tests.integration.helpers import get_task, submit


def get(task_id: str) -> dict:
    return get_task(task_id)


def finished(task_id: str) -> dict | None:
    task = get(task_id)
    return task if task["status"] in ("succeeded", "failed") else None


def test_worker_runs_tasks_submitted_through_the_api(stack, celery_worker):
    ids = [submit("math.primes", {"limit": 10_000 + i}) for i in range(3)]
    ids.append(submit("test.echo_celery", {"hello": "celery"}))
    for task_id in ids:
        wait_for(lambda t=task_id: finished(t), 60, what=f"task {task_id}")
    assert get(ids[0])["result"] == {"limit": 10_000, "count": 1229, "largest": 9973}
    task = get(ids[3])
    assert task["status"] == "succeeded" and task["attempts"] == 1
    assert task["result"]["echo"] == {"hello": "celery"}
    assert stack.depth(stack.celery_queue) == 0


def test_a_failed_attempt_is_not_acknowledged_and_ends_in_the_dlq(stack, celery_worker):
    task_id = submit("test.fail_celery", {})
    wait_for(lambda: stack.depth(stack.celery_dlq) == 1, 60, what="dead letter")
    task = get(task_id)
    assert task["attempts"] == MAX_RECEIVES  # every delivery ran, none was acknowledged
    assert task["error"]["type"] == "ValueError"
    assert task["status"] == "queued"  # the dead-letter function marks it failed (Lambda lane)


def test_a_stock_celery_worker_runs_our_messages_and_ignores_other_content(stack):
    """Interop: our producer's message, consumed by stock Celery; a pickle message is refused."""
    import base64

    task_id = submit("test.echo_celery", [1, "two"])
    env = json.loads(base64.b64decode(stack.receive(stack.celery_queue)[0]["Body"]))
    env["content-type"] = "application/x-python-serialize"
    stack.sqs.purge_queue(QueueUrl=stack.celery_queue)
    time.sleep(0.2)
    stack.sqs.send_message(
        QueueUrl=stack.celery_queue,
        MessageBody=base64.b64encode(json.dumps(env).encode()).decode(),
    )
    from tasklane import broker

    stack.sqs.send_message(
        QueueUrl=stack.celery_queue,
        MessageBody=broker.message_body("test.echo_celery", uuid.UUID(task_id), "tl-celery"),
    )
    worker = Worker(stack.env, "tl-celery", "--pool", "solo")
    try:
        worker.wait_ready()
        wait_for(lambda: finished(task_id), 60, what="task")
        assert get(task_id)["result"]["echo"] == [1, "two"]
        assert get(task_id)["attempts"] == 1  # the pickle twin never ran
        wait_for(
            lambda: any(
                "ContentDisallowed" in line or "disallowed" in line.lower() for line in worker.lines
            ),
            30,
            what="content refused",
        )
        # refused, and kept: the pickle message is in the DLQ with the reason, not dropped
        wait_for(lambda: stack.depth(stack.celery_dlq) == 1, 30, what="the dead letter")
        (dead,) = stack.receive(stack.celery_dlq)
        reason = dead["MessageAttributes"]["tasklane-dead-letter-reason"]["StringValue"]
        assert "untrusted content" in reason and "pickle" in reason, reason
        assert stack.depth(stack.celery_queue) == 0
    finally:
        worker.stop()


def test_a_task_longer_than_the_visibility_timeout_is_not_delivered_again(stack, celery_worker):
    """The heartbeat keeps the message hidden (queue visibility is 2 s, the task takes 6 s)."""
    task_id = submit("test.sleep_celery", {"seconds": 6})
    task = wait_for(lambda: finished(task_id), 60, what="long task")
    assert task["status"] == "succeeded" and task["attempts"] == 1
    received = [line for line in celery_worker.lines if "received" in line and task_id in line]
    assert len(received) == 1, received
    assert stack.depth(stack.celery_queue) == 0


def test_an_unknown_task_goes_to_the_dlq_after_one_delivery(stack, celery_worker):
    from tasklane import codec

    body = codec.encode(
        "no.such.task",
        str(uuid.uuid4()),
        routing_key="tl-celery",
        origin="o",
        reply_to="r",
        delivery_tag="d",
    )
    stack.sqs.send_message(QueueUrl=stack.celery_queue, MessageBody=body)
    wait_for(lambda: stack.depth(stack.celery_dlq) == 1, 30, what="the dead letter")
    (dead,) = stack.receive(stack.celery_dlq)
    assert dead["Body"] == body
    # the reason attribute is tasklane's fast path; SQS's redrive would not add one
    reason = dead["MessageAttributes"]["tasklane-dead-letter-reason"]["StringValue"]
    assert "no.such.task" in reason
    assert stack.depth(stack.celery_queue) == 0
