"""The outbox relay: a task committed but not sent stays pending, and is sent later, once."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text
from tasklane import database, reconciler

from tests.integration.helpers import call_api, consumer_source


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
    assert reconciler.reconcile() == []  # still inside the grace period
    age_pending(120)
    (record,) = reconciler.reconcile()
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
        results.append(reconciler.reconcile(limit=100))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [r.id for batch in results for r in batch]
    assert len(sent) == len(set(sent)) == 30
    time.sleep(0.2)
    assert stack.depth(stack.lambda_queue) == len(ids)


def test_a_task_stuck_running_after_its_consumer_died_is_sent_again(stack):

    _, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": "again"})
    stack.receive(stack.lambda_queue)  # a consumer took the message...
    with database.engine().begin() as conn:  # ...claimed the task, and died; its message is gone
        conn.execute(
            text(
                "UPDATE tasks SET status = 'running', attempts = 1, "
                "lease_until = now() - interval '5 minutes', "
                "updated_at = now() - interval '5 minutes'"
            )
        )
    stack.sqs.purge_queue(QueueUrl=stack.lambda_queue)
    time.sleep(0.2)
    assert call_api("POST", "/tasks", {"task": "test.echo", "payload": "in line"})[0] == 202
    assert reconciler.reconcile() == []  # a message waits in the lane: its own may be in line too
    for message in stack.receive(stack.lambda_queue):  # the lane is quiet again
        stack.sqs.delete_message(
            QueueUrl=stack.lambda_queue, ReceiptHandle=message["ReceiptHandle"]
        )
    resent = reconciler.reconcile()
    assert body["id"] in {str(r.id) for r in resent}
    with database.engine().begin() as conn:  # a lane that is never quiet: much later, all the same
        conn.execute(
            text(
                "UPDATE tasks SET lease_until = now() - interval '25 minutes', "
                "updated_at = now() - interval '25 minutes' WHERE id = :id"
            ),
            {"id": body["id"]},
        )
    assert call_api("POST", "/tasks", {"task": "test.echo", "payload": "busy"})[0] == 202
    assert body["id"] in {str(r.id) for r in reconciler.reconcile()}
    source = consumer_source(stack)
    assert source.poll_once().deleted == 3  # its two copies (one runs it) and the busy one
    task = call_api("GET", f"/tasks/{body['id']}")[2]
    assert task["status"] == "succeeded" and task["attempts"] == 2


def test_a_lost_high_priority_message_is_sent_again_past_the_lanes_own_backlog(stack, monkeypatch):
    """Each of a lane's two queues is quiet or not on its own: a backlog in the lane's queue
    does not hold back a lost message of its high-priority queue, nor the other way round."""
    from tasklane import submit
    from tasklane.config import settings

    monkeypatch.setenv("QUEUED_GRACE_SECONDS", "300")
    settings.cache_clear()
    urgent = submit("test.echo", "lost", priority=9)
    stack.sqs.purge_queue(QueueUrl=stack.lambda_high_queue)  # acknowledged while queued
    time.sleep(0.2)
    backlog = submit("test.echo", "waits its turn")  # the lane's own queue is busy
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '11 minutes'"))
    assert [r.id for r in reconciler.reconcile()] == [urgent.id]
    assert stack.depth(stack.lambda_high_queue) == 1 and stack.depth(stack.lambda_queue) == 1
    assert stack.lambda_lane(high=True).poll_once().deleted == 1
    assert urgent.status() == "succeeded" and backlog.status() == "queued"


def test_a_queued_task_whose_message_is_gone_is_sent_again_once_its_lane_is_quiet(
    stack, monkeypatch
):
    from tasklane.config import settings

    monkeypatch.setenv("QUEUED_GRACE_SECONDS", "300")
    settings.cache_clear()
    _, _, stranded = call_api("POST", "/tasks", {"task": "test.echo", "payload": "lost"})
    stack.sqs.purge_queue(QueueUrl=stack.lambda_queue)  # acknowledged while still queued
    time.sleep(0.2)
    _, _, waiting = call_api("POST", "/tasks", {"task": "test.echo", "payload": "waiting"})
    with database.engine().begin() as conn:  # past the grace, even after the longest back-off
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '4 minutes'"))
    assert reconciler.reconcile() == []  # may still be waiting out a retry's back-off
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '11 minutes'"))
    assert reconciler.reconcile() == []  # a message waits in the lane: maybe just a backlog
    stack.receive(stack.lambda_queue)  # the waiting one is taken
    resent = reconciler.reconcile()
    assert {str(r.id) for r in resent} == {stranded["id"], waiting["id"]}
    assert reconciler.reconcile() == []  # touched: not again within the grace period
    assert consumer_source(stack).poll_once().deleted == 2
    assert call_api("GET", f"/tasks/{stranded['id']}")[2]["status"] == "succeeded"
