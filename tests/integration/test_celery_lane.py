"""The celery lane: a real ``celery -A tasklane.worker worker`` process on moto's SQS server."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from pathlib import Path

from tasklane import broker, database

from tests.conftest import MAX_RECEIVES, Worker, wait_for
from tests.integration.helpers import call_api, get_task, submit


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
    # each failed attempt logged once, with its message and the task's own traceback; Celery
    # says the attempt was not done in one line, without tasklane's frames
    mine = [line for line in celery_worker.lines if task_id in line]
    logged = [json.loads(line) for line in mine if line.startswith("{")]
    assert not [line for line in mine if "task failed" in line and not line.startswith("{")]
    failures = [entry for entry in logged if entry.get("message", "").startswith("task failed")]
    assert len(failures) == MAX_RECEIVES, failures
    assert all("fail_celery" in f["traceback"] for f in failures)
    assert all(f["error_message"] == task["error"]["message"] for f in failures)
    assert not [line for line in celery_worker.lines if "celery_run.py" in line]  # no own frames


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


def test_undecodable_messages_are_poison_and_the_worker_goes_on(stack, celery_worker):
    """kombu decodes every body as it arrives; 10 KB of brackets made it raise RecursionError
    there, which stopped the worker ("Unrecoverable error") and every worker after it. A body
    that is not JSON was rejected, so it came back until SQS's maxReceiveCount."""
    deep = '{"body": ' + "[" * 5000 + "]" * 5000 + "}"
    stack.sqs.send_message(QueueUrl=stack.celery_queue, MessageBody=deep)
    stack.sqs.send_message(QueueUrl=stack.celery_queue, MessageBody="not even JSON")
    raw = base64.b64decode(broker.message_body("test.echo_celery", uuid.uuid4(), "tl-celery"))
    envelope = json.loads(raw)
    envelope["headers"]["task"] = {"x": 1}  # Celery looked it up in a dict: TypeError
    odd = json.dumps(envelope)
    stack.sqs.send_message(QueueUrl=stack.celery_queue, MessageBody=odd)
    wait_for(lambda: stack.depth(stack.celery_dlq) >= 3, 30, what="the dead letters")
    dead = stack.receive(stack.celery_dlq)
    # (a test queue hides a message for 2 s: a slow first dead-lettering may see it twice)
    assert {m["Body"] for m in dead} == {deep, "not even JSON", odd}
    for message in dead:  # at once, by tasklane (SQS's redrive would add no reason)
        reason = message["MessageAttributes"]["tasklane-dead-letter-reason"]["StringValue"]
        assert "undecodable" in reason
    task_id = submit("test.echo_celery", {"after": "deep"})
    wait_for(lambda: get(task_id)["status"] == "succeeded", 40, what="the next task")
    assert celery_worker.process.poll() is None
    # the worker acknowledges a message after it records the outcome: the queue empties then
    wait_for(lambda: stack.depth(stack.celery_queue) == 0, 10, what="the queue empty")


def pool_children(worker: Worker) -> set[int]:
    """The pids of a worker's pool processes (children of its main process)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == worker.process.pid:
            children.add(int(stat.parent.name))
    return children


def test_a_pool_process_killed_mid_task_loses_only_that_run(stack, celery_worker, tmp_path):
    """What an OOM kill does to a heavy task. The worker survives (it used to stop on kombu's
    KeyError('sqs_message')), the other run goes on untouched, and the killed run's task runs
    again promptly, its lost run recorded, and nothing reaches the DLQ."""
    killed_marker, other_marker = tmp_path / "killed", tmp_path / "other"
    killed = submit("test.sleep_once_celery", {"marker": str(killed_marker), "seconds": 30})
    other = submit("test.sleep_once_celery", {"marker": str(other_marker), "seconds": 4})
    wait_for(lambda: killed_marker.exists() and other_marker.exists(), 30, what="both running")
    victim = int(killed_marker.read_text().split()[0])
    assert victim in pool_children(celery_worker)
    os.kill(victim, signal.SIGKILL)

    task = wait_for(lambda: finished(killed), 40, what="the killed task's second run")
    assert task["status"] == "succeeded" and task["result"] == {"runs": 2}
    assert task["attempts"] == 2  # the lost run counts: a task that kills its worker ends
    assert wait_for(lambda: finished(other), 30, what="the other task")["result"] == {"runs": 1}
    assert celery_worker.process.poll() is None, "the worker stopped"
    assert not [line for line in celery_worker.lines if "Unrecoverable error" in line]
    assert stack.depth(stack.celery_dlq) == 0
    assert submit_and_wait("test.echo_celery", {"still": "working"})["status"] == "succeeded"


def submit_and_wait(task: str, payload) -> dict:
    task_id = submit(task, payload)
    return wait_for(lambda: finished(task_id), 30, what=task)


def test_a_run_past_its_hard_time_limit_is_killed_recorded_and_never_doubled(
    stack, celery_worker, tmp_path
):
    """The task ignores its time limit's signal; Celery kills its process at the hard limit.
    The run is recorded as a failed attempt (its last: max_attempts=1), the message is done,
    the heartbeat has stopped with it, and no second run started beside the first."""
    marker = tmp_path / "runs"
    task_id = submit("test.stubborn_celery", {"marker": str(marker), "seconds": 60})
    task = wait_for(lambda: finished(task_id), 40, what="the hard time limit")
    assert task["status"] == "failed" and task["error"]["type"] == "TimeLimitExceeded"
    assert len(marker.read_text().splitlines()) == 1
    assert celery_worker.process.poll() is None
    wait_for(lambda: stack.depth(stack.celery_queue) == 0, 10, what="the message deleted")
    assert stack.depth(stack.celery_dlq) == 0


def test_a_stock_send_task_without_task_id_keeps_its_claim_while_it_runs(
    stack, celery_worker, tmp_path
):
    """Celery gives the message a random header id; the heartbeat must extend the claim of the
    task the argument names. Otherwise the claim lapses after the queue's 2 s and a duplicate
    arriving then runs the task a second time beside the first."""
    from celery import Celery
    from tasklane import database
    from tasklane.store import NewTask, TaskStore

    marker = tmp_path / "runs"
    task_id = uuid.uuid4()
    TaskStore(database.engine()).insert(
        [
            NewTask(
                task_id,
                "test.sleep_once_celery",
                "celery",
                json.dumps({"marker": str(marker), "seconds": 7}),
            )
        ]
    )
    app = Celery("stock", broker="sqs://", set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "predefined_queues": {"tl-celery": {"url": stack.celery_queue}},
        },
        task_serializer="json",
    )
    app.send_task("test.sleep_once_celery", args=[str(task_id)], queue="tl-celery")
    wait_for(marker.exists, 30, what="the run to start")
    time.sleep(4)  # past the queue's visibility timeout, which a claim's lease equals
    app.send_task("test.sleep_once_celery", args=[str(task_id)], queue="tl-celery")
    task = wait_for(lambda: finished(str(task_id)), 60, what="long task")
    assert task["status"] == "succeeded" and task["attempts"] == 1
    assert len(marker.read_text().splitlines()) == 1, "ran twice"


def test_a_worker_that_does_not_know_a_task_yet_leaves_it_for_one_that_does(stack):
    """A deploy in progress: this worker's TASK_MODULES lack the task, whose row exists."""
    task_id = submit("test.echo_celery", "new code")
    worker = Worker(
        stack.env | {"TASK_MODULES": "tasklane.examples"}, "tl-celery", "--pool", "solo"
    )
    try:
        worker.wait_ready()
        wait_for(
            lambda: any("left for one that knows it" in line for line in worker.lines),
            30,
            what="the unknown task",
        )
        time.sleep(1)
    finally:
        worker.stop()
    assert (get(task_id)["status"], get(task_id)["attempts"]) == ("queued", 0)
    assert stack.depth(stack.celery_dlq) == 0
    assert stack.depth(stack.celery_queue) == 1  # left, hidden for a while
    assert stack.receive(stack.celery_queue) == []


def test_an_unknown_task_met_while_postgres_is_down_is_left_not_dead_lettered(stack):
    """Whether the task is real cannot be told without the database: it is not poison."""
    from tasklane.local.postgres import free_port

    submit("test.echo_celery", "mid-deploy, mid-outage")
    env = stack.env | {
        "TASK_MODULES": "tasklane.examples",
        "DATABASE_URL": f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/gone",
    }
    worker = Worker(env, "tl-celery", "--pool", "solo")
    try:
        worker.wait_ready()
        wait_for(
            lambda: any("the message is left" in line for line in worker.lines),
            30,
            what="the unknown task",
        )
    finally:
        worker.stop()
    assert stack.depth(stack.celery_dlq) == 0 and stack.depth(stack.celery_queue) == 1


def test_the_heartbeat_stops_when_its_run_is_no_longer_active(stack):
    """However a run ends (acknowledged, rejected, cancelled on a lost connection, its process
    gone), Celery drops it from its active requests; the heartbeat stops then, letting the
    message come back and the lease lapse instead of extending them for ever."""
    from tasklane import database
    from tasklane.store import Claim, TaskStore
    from tasklane.worker import Heartbeat

    store = TaskStore(database.engine())
    task_id = uuid.UUID(submit("test.echo_celery", 1))
    (message,) = stack.receive(stack.celery_queue)  # hidden for the queue's 2 s
    store.claim(Claim(task_id, "test.echo_celery", "m#1"), 2)
    alive = {"yes": True}
    beat = Heartbeat(
        stack.celery_queue,
        message["ReceiptHandle"],
        task_id,
        "m#1",
        2,
        alive=lambda: alive["yes"],
        until=time.monotonic() + 600,
    )
    try:
        time.sleep(3)  # beats kept it hidden past the queue's 2 s
        assert stack.receive(stack.celery_queue) == []
        alive["yes"] = False  # the run ended without acknowledge or reject
        redelivered = wait_for(lambda: stack.receive(stack.celery_queue), 10, what="message back")
        assert redelivered[0]["MessageId"] == message["MessageId"]
        (row,) = stack.query("SELECT lease_until < now() AS lapsed FROM tasks")
        assert row.lapsed
        assert not beat.thread.is_alive()
    finally:
        beat.cancel()


def test_a_run_cancelled_for_a_lost_broker_connection_gives_its_claim_back(stack):
    """Celery's cancel-on-connection-loss path, run on a real request for a real SQS message.

    On SQS kombu retries a failed poll rather than report a lost connection (a cut network
    does not reach this path, tried with a proxy), so the loss itself cannot be produced here;
    the pool is the one stand-in (no process runs the task). Celery cancels without
    acknowledging or rejecting: the heartbeat must stop and the claim be given back, uncounted.
    """
    from celery.worker import state as worker_state
    from celery.worker.request import create_request_cls
    from tasklane import database, worker
    from tasklane.store import Claim, TaskStore

    task_id = uuid.UUID(submit("test.echo_celery", "cancelled"))
    task = worker.app.tasks["test.echo_celery"]
    with worker.app.connection_for_read() as connection:
        message = wait_for(
            lambda: connection.default_channel.basic_get(stack.celery_queue.rsplit("/", 1)[-1]),
            10,
            what="the message through kombu",
        )

        class PoolStandIn:
            terminated: list[int] = []

            def apply_async(self, *args, **kwargs):  # never called: nothing runs here
                raise AssertionError("the stand-in pool runs nothing")

            def terminate_job(self, pid, signal=None):
                self.terminated.append(pid)

        pool = PoolStandIn()
        request = create_request_cls(worker.ClaimCheckRequest, task, pool, "host", None)(
            message, app=worker.app, task=task
        )
        TaskStore(database.engine()).claim(Claim(task_id, task.name, request.token), 2)
        worker_state.task_accepted(request)
        request.on_accepted(pid=4242, time_accepted=time.monotonic())
        heartbeat = request._heartbeat
        request.cancel(pool)  # what on_connection_error_after_connected does per active run
        assert pool.terminated == [4242]
        assert heartbeat.stop.is_set()
        assert (get(str(task_id))["status"], get(str(task_id))["attempts"]) == ("queued", 0)
        # no longer extended: the message is offered again after the queue's 2 s
        again = wait_for(lambda: stack.receive(stack.celery_queue), 10, what="the message back")
        assert again[0]["MessageId"] == message.delivery_info["sqs_message"]["MessageId"]


def test_a_run_longer_than_the_outcome_patience_still_waits_out_a_blip(stack, monkeypatch):
    """A worker's outcome waits for Postgres for OUTCOME_PATIENCE_S (120 s; 4 s here) counted
    from when the run ends. Counted from its start, any run longer than that gave up on its
    outcome at the first failed write, and the whole task ran again once its lease expired."""
    import threading

    from tasklane import celery_run, registry

    monkeypatch.setattr(celery_run, "OUTCOME_PATIENCE_S", 4)
    task_id = submit("test.sleep_celery", {"seconds": 4})  # a run longer than the patience
    stack.sqs.purge_queue(QueueUrl=stack.celery_queue)  # this test runs the worker's code itself
    dialect = database.engine().dialect
    execute = dialect.do_execute
    outage = threading.Event()

    def do_execute(cursor, statement, parameters, context=None):
        if outage.is_set():
            raise dialect.loaded_dbapi.InterfaceError("network error")
        return execute(cursor, statement, parameters, context)

    monkeypatch.setattr(dialect, "do_execute", do_execute)
    timers = [threading.Timer(3.5, outage.set), threading.Timer(5.0, outage.clear)]
    for timer in timers:  # Postgres lost for 1.5 s, from half a second before the run ends
        timer.start()
    try:
        outcome = celery_run.execute(registry.get("test.sleep_celery"), task_id, "m-1#blip")
    finally:
        for timer in timers:
            timer.cancel()
        outage.clear()
    assert outcome == "succeeded"
    assert (get(task_id)["status"], get(task_id)["attempts"]) == ("succeeded", 1)


def test_a_worker_beats_in_postgres_with_what_it_runs(stack):
    """The workers view: a worker's row appears when it is ready (host, pid, queues,
    concurrency), lists the task it runs, and goes when the worker stops cleanly."""
    from tasklane import reads

    def mine() -> dict | None:
        rows = reads.workers()["workers"]
        return next((w for w in rows if w["pid"] == worker.process.pid), None)

    worker = Worker(stack.env, "tl-celery", "--pool", "prefork", "--concurrency", "2")
    try:
        worker.wait_ready()
        row = wait_for(mine, 20, what="the worker's first beat")
        assert row["name"].startswith("celery@") and row["concurrency"] == 2
        assert row["queues"] == "tl-celery" and row["active"] == []
        task_id = submit("test.sleep_celery", {"seconds": 12})  # longer than a beat
        wait_for(lambda: task_id in ((mine() or {}).get("active") or []), 25, what="its task")
        assert reads.workers()["running"]["celery"] >= 1
        status, _, view = call_api("GET", "/workers")
        assert status == 200
        shown = next(w for w in view["workers"] if w["pid"] == worker.process.pid)
        assert shown["alive"] and task_id in shown["active"] and shown["queues"] == ["tl-celery"]
    finally:
        worker.stop()
    assert mine() is None  # a clean stop removes its row
