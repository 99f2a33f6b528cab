"""The outbox relay: a task committed but not sent stays pending, and is sent later, once."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text
from tasklane import database, service

from tests.integration.helpers import call_api


def age_pending(seconds: int) -> None:
    with database.engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET updated_at = now() - make_interval(secs => :s) "
                "WHERE status = 'pending'"
            ),
            {"s": seconds},
        )


def test_a_failed_send_is_recovered_by_the_reconciler(stack):
    url = stack.lambda_queue
    stack.sqs.delete_queue(QueueUrl=url)  # SQS unreachable for this submission
    status, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1})
    assert status == 202 and body["status"] == "pending"
    stack.sqs.create_queue(QueueName="tl-lambda")
    assert service.reconcile() == []  # still inside the grace period
    age_pending(120)
    (record,) = service.reconcile()
    assert record.id.hex == body["id"].replace("-", "") and record.status == "queued"
    assert len(stack.receive(url)) == 1


def test_two_reconcilers_never_send_a_task_twice(stack):
    stack.sqs.delete_queue(QueueUrl=stack.lambda_queue)
    ids = [
        call_api("POST", "/tasks", {"task": "test.echo", "payload": i})[2]["id"] for i in range(30)
    ]
    stack.sqs.create_queue(QueueName="tl-lambda")
    age_pending(120)
    results: list[list] = []
    barrier = threading.Barrier(3)

    def run():
        barrier.wait()
        results.append(service.reconcile(limit=100))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [r.id for batch in results for r in batch]
    assert len(sent) == len(set(sent)) == 30
    time.sleep(0.2)
    assert stack.depth(stack.lambda_queue) == len(ids)
