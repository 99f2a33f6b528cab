"""Time: countdown and eta of any length, periodic tasks without a beat singleton, cancel.

Time is moved, not slept: a task due in two hours is made due in a few seconds by moving its
run_at (what the clock would have done), and schedules are fired with the clock a test gives.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from tasklane import Schedule, TaskCancelled, TaskHandle, database, reconciler, registry
from tasklane.lifecycle import Status
from tasklane.store import default_store

from tests import tasks
from tests.conftest import wait_for
from tests.integration.helpers import call_api, consumer_source, get_task


def deleted(result) -> int:
    return result.deleted if result else 0


def run_lambda_lane(stack) -> int:
    return deleted(consumer_source(stack).poll_once())


def row(task_id: str):
    (found,) = stack_query(
        "SELECT status, run_at, started_at, attempts FROM tasks WHERE id = :id",
        id=uuid.UUID(task_id),
    )
    return found


def stack_query(sql: str, **params):
    with database.engine().connect() as conn:
        return list(conn.execute(text(sql), params))


def move_due(seconds: float, task_id: str | None = None) -> None:
    """Time passes: a task (or every scheduled one) is now due in ``seconds``."""
    where = "WHERE id = :id" if task_id else "WHERE status = 'scheduled'"
    with database.engine().begin() as conn:
        conn.execute(
            text(f"UPDATE tasks SET run_at = now() + make_interval(secs => :s) {where}"),
            {"s": seconds, "id": uuid.UUID(task_id) if task_id else None},
        )


# ------------------------------------------------------------------------------ delays
def test_delay_seconds_holds_a_task_back_on_the_queue(stack):
    status, _, body = call_api(
        "POST", "/tasks", {"task": "test.echo", "payload": "soon", "delay_seconds": 2}
    )
    assert status == 202 and body["status"] == "queued"
    assert get_task(body["id"])["run_at"] is not None
    assert run_lambda_lane(stack) == 0  # delayed: not yet visible
    wait_for(lambda: run_lambda_lane(stack), 15, what="the delayed message")
    done = row(body["id"])
    assert done.status == "succeeded" and done.started_at >= done.run_at  # never early


def test_run_at_months_away_is_scheduled_and_sent_when_due(stack):
    eta = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    status, _, body = call_api(
        "POST", "/tasks", {"task": "test.echo", "payload": "later", "run_at": eta}
    )
    assert status == 202 and body["status"] == "scheduled"
    assert reconciler.reconcile() == [] and stack.depth(stack.lambda_queue) == 0
    move_due(3, body["id"])  # ninety days pass
    (sent,) = reconciler.reconcile()
    assert sent.status == "queued" and stack.depth(stack.lambda_queue) == 1
    wait_for(lambda: run_lambda_lane(stack), 15, what="the due task")
    done = row(body["id"])
    assert done.status == "succeeded" and done.started_at >= done.run_at


@pytest.mark.parametrize(
    "extra",
    [
        {"delay_seconds": 5, "run_at": "2030-01-01T00:00:00+00:00"},
        {"run_at": "2030-01-01T00:00:00"},  # no offset: which zone?
        {"delay_seconds": -1},
        {"run_at": "next tuesday"},
        {"run_at": "9999-12-31T23:59:59-14:00"},  # no UTC form in Python's calendar
        {"run_at": "0001-01-01T00:00:00+14:00"},
    ],
)
def test_bad_timing_is_a_400(stack, extra):
    status, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1} | extra)
    assert status == 400, body
    assert stack_query("SELECT count(*) FROM tasks")[0][0] == 0
    status, _, body = call_api(
        "POST", "/tasks/batch", {"tasks": [{"task": "test.echo", "payload": 1} | extra]}
    )
    assert status == 400, body


@pytest.mark.parametrize(
    "query",
    [
        "created_after=0001-01-01T00:00:00%2B14:00",
        "created_before=9999-12-31T23:59:59-14:00",
        "cursor="
        + base64.urlsafe_b64encode(
            json.dumps(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]).encode()
        ).decode(),
    ],
)
def test_moments_past_the_calendars_edge_in_a_listing_are_a_400_naming_them(stack, query):
    status, _, body = call_api("GET", f"/tasks?{query}")
    assert status == 400, body
    assert query.split("=")[0] in body["error"]["message"].split(":")[0], body


def test_a_batch_item_may_be_delayed(stack):
    status, _, body = call_api(
        "POST",
        "/tasks/batch",
        {
            "tasks": [
                {"task": "test.echo", "payload": 1},
                {"task": "test.echo", "payload": 2, "delay_seconds": 3600},
            ]
        },
    )
    assert status == 202 and [t["status"] for t in body["tasks"]] == ["queued", "scheduled"]


def test_two_schedulers_at_once_send_each_due_task_once(stack):
    ids = [
        call_api("POST", "/tasks", {"task": "test.echo", "payload": i, "delay_seconds": 7200})[2][
            "id"
        ]
        for i in range(20)
    ]
    move_due(60)
    results: list[list] = []
    barrier = threading.Barrier(2)

    def scheduler():
        barrier.wait()
        results.append(reconciler.reconcile())

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [r.id for batch in results for r in batch]
    assert sorted(map(str, sent)) == sorted(ids)
    assert stack.depth(stack.lambda_queue) == 20


def test_one_pass_sends_everything_due_batch_after_batch(stack):
    """No cap on what is due: a pass claims and sends batch after batch until none is left
    (here 3 batches of 10, and a short one), the pending re-sends as well."""
    call_api(
        "POST",
        "/tasks/batch",
        {"tasks": [{"task": "test.echo", "payload": i, "delay_seconds": 7200} for i in range(35)]},
    )
    move_due(60)
    sent = reconciler.reconcile(limit=10)
    assert len(sent) == len({r.id for r in sent}) == 35
    assert {r.status for r in sent} == {Status.QUEUED}
    assert stack.depth(stack.lambda_queue) == 35
    assert stack_query("SELECT count(*) FROM tasks WHERE status = 'scheduled'")[0][0] == 0


def test_a_pass_stops_claiming_when_its_time_is_spent(stack):
    """Past its budget a pass ends after the batch in hand: what is left stays ``scheduled``
    for the passes beside it, nothing is claimed and left unsent."""
    call_api(
        "POST",
        "/tasks/batch",
        {"tasks": [{"task": "test.echo", "payload": i, "delay_seconds": 7200} for i in range(25)]},
    )
    move_due(60)
    assert len(reconciler.reconcile(limit=10, budget_s=0)) == 10
    assert stack_query("SELECT count(*) FROM tasks WHERE status = 'scheduled'")[0][0] == 15
    assert len(reconciler.reconcile(limit=10)) == 15


# ------------------------------------------------------------------------------ periodic
@pytest.fixture
def periodic():
    """Periodic tasks registered for a test (and gone after it)."""
    names = []

    def define(name, schedule, payload=None, catch_up=False):
        registry.task(name, schedule=Schedule(schedule, payload, catch_up))(tasks.echo.fn)
        names.append(name)

    yield define
    for name in names:
        registry._tasks.pop(name, None)


def tick_rows(name: str) -> list:
    return stack_query(
        "SELECT run_at, status, payload FROM tasks WHERE task = :t ORDER BY run_at", t=name
    )


def test_each_tick_fires_once_however_many_schedulers_run(stack, periodic):
    periodic("test.every_minute", "rate(1 minute)", {"tick": True})
    now = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
    reconciler.fire_schedules(now=now)  # the first pass starts the schedule: no past ticks
    later = now + timedelta(minutes=20)
    barrier = threading.Barrier(3)

    def scheduler():
        barrier.wait()
        reconciler.fire_schedules(now=later)

    threads = [threading.Thread(target=scheduler) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = tick_rows("test.every_minute")
    run_ats = [r.run_at for r in rows]
    assert len(run_ats) == len(set(run_ats))  # one task per tick
    assert run_ats[0] == datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    assert all(r.payload == {"tick": True} for r in rows)


def test_missed_ticks_coalesce_after_downtime_unless_caught_up(stack, periodic):
    periodic("test.coalesced", "rate(5 minutes)")
    periodic("test.caught_up", "rate(5 minutes)", catch_up=True)
    start = datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    reconciler.fire_schedules(now=start)  # 12:05, 12:10, 12:15: the next 15 minutes
    back = start + timedelta(hours=2)  # two hours down: 12:20 to 14:00 missed
    reconciler.fire_schedules(now=back)
    coalesced = [r.run_at for r in tick_rows("test.coalesced")]
    caught_up = [r.run_at for r in tick_rows("test.caught_up")]
    at = lambda h, m: datetime(2030, 1, 1, h, m, tzinfo=UTC)  # noqa: E731
    assert coalesced == [
        at(12, 5),
        at(12, 10),
        at(12, 15),
        at(14, 0),
        at(14, 5),
        at(14, 10),
        at(14, 15),
    ]
    assert len(caught_up) == 3 + 21 + 3


def test_a_periodic_tick_runs_through_the_lambda_lane(stack, periodic):
    periodic("test.every_minute_now", "rate(1 minute)", {"tick": "now"})
    real_now = datetime.now(UTC)
    reconciler.fire_schedules(now=real_now - timedelta(seconds=90))  # it started a while ago
    reconciler.fire_schedules(now=real_now)
    ticks = stack_query(
        "SELECT id, run_at FROM tasks WHERE task = 'test.every_minute_now' ORDER BY run_at"
    )
    due = [t for t in ticks if t.run_at <= real_now]  # the rest are sent delayed to their tick
    assert len(ticks) >= 16 and 1 <= len(due) <= 2

    def due_ticks_ran() -> bool:
        run_lambda_lane(stack)
        return all(TaskHandle(t.id).status() == "succeeded" for t in due)

    wait_for(due_ticks_ran, 20, what="the ticks due")
    assert TaskHandle(due[0].id).get(timeout=0) == {"echo": {"tick": "now"}}
    later = [t for t in ticks if t.run_at > real_now + timedelta(seconds=30)]
    assert later and all(TaskHandle(t.id).status() == "queued" for t in later)  # not early


# ------------------------------------------------------------------------------ cancel
def test_a_waiting_task_is_cancelled_and_its_message_never_runs_it(stack, tmp_path):
    ledger = tmp_path / "ledger"
    handle = tasks.ledger.delay({"ledger": str(ledger), "n": 1})
    (message,) = stack.receive(stack.lambda_queue)
    status, _, body = call_api("POST", f"/tasks/{handle.id}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=message["Body"])  # a copy
    stack.sqs.change_message_visibility(
        QueueUrl=stack.lambda_queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    assert wait_for(lambda: run_lambda_lane(stack), 10, what="the messages") >= 1
    run_lambda_lane(stack)
    assert not ledger.exists() and stack.depth(stack.lambda_queue) == 0
    with pytest.raises(TaskCancelled):
        handle.get(timeout=0)


@pytest.mark.parametrize("when", ["pending", "scheduled"])
def test_cancel_works_in_every_waiting_status(stack, when):
    if when == "pending":
        handle = TaskHandle(uuid.uuid4())
        from tasklane.store import NewTask

        default_store().insert([NewTask(handle.id, "test.echo", "lambda", "1")])
    else:
        handle = tasks.echo.apply_async(1, countdown=3600)
    assert handle.status() == when
    assert handle.cancel() == "cancelled"
    with database.engine().begin() as conn:  # long past every grace period
        conn.execute(text("UPDATE tasks SET updated_at = now() - interval '1 day', run_at = NULL"))
    assert reconciler.reconcile() == [] and handle.status() == "cancelled"
    assert stack.depth(stack.lambda_queue) == 0


def test_a_running_task_sees_the_request_and_ends_cancelled(stack, tmp_path):
    marker = tmp_path / "step"
    handle = tasks.cooperative.delay({"marker": str(marker), "steps": 200})
    runner = threading.Thread(target=lambda: run_lambda_lane(stack))
    runner.start()
    wait_for(marker.exists, 10, what="the run to start")
    status, _, body = call_api("POST", f"/tasks/{handle.id}/cancel")
    assert status == 200 and body["status"] == "running"  # asked; it stops when it looks
    runner.join(20)
    record = handle.record()
    assert record.status == "cancelled" and record.error["type"] == "Cancelled"
    assert int(marker.read_text()) < 199


def test_a_finished_task_cannot_be_cancelled_and_an_unknown_one_is_404(stack):
    handle = tasks.echo.delay(1)
    run_lambda_lane(stack)
    assert call_api("POST", f"/tasks/{handle.id}/cancel")[0] == 409
    assert call_api("POST", f"/tasks/{uuid.uuid4()}/cancel")[0] == 404


def test_celery_clients_see_a_cancelled_task_as_revoked(stack):
    from celery import Celery
    from celery.exceptions import TaskRevokedError

    handle = tasks.echo.apply_async(1, countdown=3600)
    handle.cancel()
    app = Celery("client", backend="tasklane.results.TaskTableBackend", set_as_current=False)
    result = app.AsyncResult(str(handle.id))
    assert result.state == "REVOKED"
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


# ------------------------------------------------------------------------------ celery lane
def test_a_stock_countdown_in_the_celery_lane_is_not_held_by_the_worker(stack, celery_worker):
    from celery import Celery

    task_id = uuid.uuid4()
    from tasklane.store import NewTask

    default_store().insert([NewTask(task_id, "test.echo_celery", "celery", '"deferred"')])
    app = Celery("stock", broker="sqs://", set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "predefined_queues": {"tl-celery": {"url": stack.celery_queue}},
        },
        task_serializer="json",
    )
    app.send_task(
        "test.echo_celery",
        args=[str(task_id)],
        task_id=str(task_id),
        countdown=4,
        queue="tl-celery",
    )
    wait_for(lambda: row(str(task_id)).run_at is not None, 30, what="the deferral")
    result = TaskHandle(task_id).get(timeout=60)
    done = row(str(task_id))
    assert result["echo"] == "deferred" and done.started_at >= done.run_at


def test_a_failing_schedule_stops_no_other_phase_of_the_pass(stack, periodic, monkeypatch, caplog):
    """Whatever breaks one schedule at run time, the other schedules fire, due tasks are sent,
    and the failure is logged with the schedule's name."""
    periodic("test.broken", "rate(1 minute)")
    periodic("test.healthy", "rate(1 minute)")
    eta = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    _, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1, "run_at": eta})
    move_due(3, body["id"])
    broken, original = registry.get("test.broken").schedule, Schedule.due

    def due(self, *args):
        if self is broken:
            raise RuntimeError("a schedule no one foresaw")
        return original(self, *args)

    monkeypatch.setattr(Schedule, "due", due)
    sent = reconciler.reconcile()
    assert [r.id for r in sent] == [uuid.UUID(body["id"])]  # the due task went out
    assert tick_rows("test.healthy") and not tick_rows("test.broken")
    assert [r.phase for r in caplog.records if hasattr(r, "phase")] == ["schedule test.broken"]
