"""Fault injection: drive the real pipeline with many tasks while breaking things, then count.

The parts are real: Postgres, moto's SQS server, the producer and consumer handlers (through the
emulated event source), the dead-letter function on both DLQs, the reconciler, and Celery worker
processes. While tasks flow, the run injects:

- task exceptions, transient (fail the first execution) and permanent (always);
- SQS send failures at submit (a share of SendMessageBatch calls fail: tasks stay pending);
- duplicate deliveries (extra copies of messages already sent);
- poison messages (undecodable bodies, unknown tasks, ids with no row);
- payloads no consumer could load: refused at the API (too deep, too large), and one stored
  by hand that the consumer must fail once, not loop;
- tasks longer than the queue's visibility timeout (celery lane);
- lost commit replies: a share of the in-process parts' claim and outcome commits succeed but
  report a network error, as a failover does;
- one Celery pool process SIGKILLed mid-task (an OOM kill), and a whole worker SIGKILLed;
- a network partition between a worker and SQS;
- a worker whose registry lags (it does not know the celery lane's task, as mid-deploy);
- a Postgres restart (when the run owns the cluster);
- operator mistakes: a periodic schedule that fails at run time, among good ones (the
  reconciler's other phases, which re-send the tasks whose send failed, must go on); a
  migration run behind an open application transaction holding a row lock on ``tasks``; a
  transactional task asked to stop whose transaction then loses a deadlock (it must end
  ``cancelled``, its effect rolled back, and never run again).

A share of the tasks are transactional (``transactional=True``): their effect is written through
the run's own connection and commits with its outcome. Some arrive as chords (POST /workflows):
members of both lanes, some failing once, and a transactional body in either lane. A chord's
body must run after all its members, its effect must be recorded once, and every workflow must
end.

Every task records each execution (with the process that ran it) and its effect in ledger
tables, both stamped with the clock. The report counts submitted, succeeded, failed as expected,
lost (not finished, or finished wrongly), and every extra execution (an effect recorded twice),
classified: one is *explained* when an injected fault hit while the first execution was in
flight (between its start and the next execution's start), which is the at-least-once that
README promises for effects outside tasklane's own transaction; any other is a defect, as is
any transactional task's effect recorded twice, whatever the faults.

The tests run a small scenario (tests/integration/test_faults.py). A larger run starts its own
Postgres and moto:  ``python -m tests.faultsuite --tasks 500``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, text
from tasklane import broker, codec, database, reads, reconciler
from tasklane.local.events import queue_arn
from tasklane.local.eventsource import SqsEventSource
from tasklane.local.postgres import LocalPostgres
from tasklane.store import NewTask, TaskStore

from tests import procfs

#: (task name, mode, share of the run); expected outcome follows from the mode.
MIX = [
    ("fault.lambda", "ok", 0.30),
    ("fault.lambda", "transient", 0.10),
    ("fault.lambda", "permanent", 0.04),
    ("fault.lambda_tx", "ok", 0.10),
    ("fault.lambda_tx", "transient", 0.05),
    ("fault.celery", "ok", 0.18),
    ("fault.celery", "transient", 0.06),
    ("fault.celery", "long", 0.04),
    ("fault.celery", "permanent", 0.04),
    ("fault.celery_tx", "ok", 0.06),
    ("fault.celery_tx", "long", 0.03),
]
#: Tasks whose effect goes through the run's own transaction (transactional=True).
TRANSACTIONAL = {"fault.lambda_tx", "fault.celery_tx"}
#: Receives before SQS dead-letters a message: the template's floor (AWS's advice, so that
#: throttling and platform faults do not send healthy messages to the DLQ).
MAX_RECEIVES = 5
SEND_FAILURE_RATE = 0.15
DUPLICATE_RATE = 0.10
LOST_REPLY_RATE = 0.05
PARTITION_S = 6
BATCH = 20
#: Each chord's header: (task, mode) of its members.
CHORD_HEADER = [
    ("fault.lambda", "ok"),
    ("fault.lambda", "transient"),
    ("fault.celery", "ok"),
    ("fault.celery", "transient"),
]


@dataclass
class Environment:
    """Where the run's parts are; the queues are created by the caller with short timeouts."""

    env: dict[str, str]
    urls: dict[str, str]
    sqs: Any
    cluster: LocalPostgres | None = None
    visibility: int = 2


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float
    end: float


@dataclass
class Report:
    submitted: int = 0
    succeeded: int = 0
    failed_as_expected: int = 0
    cancelled_as_asked: int = 0
    lost: int = 0
    #: Extra executions with no fault in flight: defects.
    executed_more_than_once: int = 0
    #: Extra executions of a run a fault cut short between its effect and its commit.
    extra_executions_after_faults: int = 0
    #: Effects of transactional tasks recorded twice: never allowed, whatever the faults.
    transactional_effects_doubled: int = 0
    transactional_tasks: int = 0
    workflows: int = 0
    #: Chord bodies that started before one of their members had recorded its effect.
    bodies_before_members: int = 0
    workflows_unfinished: int = 0
    drain_seconds: float = 0.0
    injected: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("submitted", self.submitted),
            ("succeeded", self.succeeded),
            ("failed as expected", self.failed_as_expected),
            ("cancelled as asked", self.cancelled_as_asked),
            ("lost", self.lost),
            ("executed more than once, no fault in flight", self.executed_more_than_once),
            ("executed again after a fault cut a run short", self.extra_executions_after_faults),
            ("transactional tasks", self.transactional_tasks),
            ("transactional effects recorded twice", self.transactional_effects_doubled),
            ("chords", self.workflows),
            ("chord bodies run before all their members", self.bodies_before_members),
            ("workflows not finished", self.workflows_unfinished),
            ("time to drain", f"{self.drain_seconds:.1f} s"),
        ] + [(f"injected: {k}", v) for k, v in sorted(self.injected.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class Faults:
    """The clock of what was injected when, for classifying extra executions."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.log: list[Fault] = []
        self.lock = threading.Lock()

    def happened(self, kind: str, start: float | None = None, end: float | None = None) -> None:
        now = time.time()
        with self.lock:
            self.log.append(Fault(kind, start or now, end or now))
            self.report.injected[kind] += 1

    @contextlib.contextmanager
    def window(self, kind: str) -> Iterator[None]:
        start = time.time()
        try:
            yield
        finally:
            self.happened(kind, start, time.time())

    def during(self, start: float, end: float) -> Fault | None:
        return next((f for f in self.log if f.start <= end and f.end >= start), None)


class _SendFailures:
    """Fails a share of SendMessageBatch calls, as a network fault or throttling would."""

    def __init__(self, rate: float, rng: random.Random, faults: Faults) -> None:
        self.rate, self.rng, self.faults = rate, rng, faults
        self.enabled = True

    def __call__(self, **_: Any) -> None:
        if self.enabled and self.rng.random() < self.rate:
            from botocore.exceptions import EndpointConnectionError

            self.faults.happened("send failures (batches)")
            raise EndpointConnectionError(endpoint_url="injected://sqs")


class _LostReplies:
    """Makes a share of the claim and outcome commits of this process's parts (producer,
    consumer, dead-letter function, reconciler) succeed in Postgres but report a network
    error to the client, as when a failover drops the connection before the reply. A commit
    is a COMMIT, or a statement run in autocommit (its own transaction): its reply is lost."""

    def __init__(self, rate: float, rng: random.Random, faults: Faults) -> None:
        self.rate, self.rng, self.faults = rate, rng, faults
        self.engine = database.engine()
        self.dialect = self.engine.dialect
        self.commit, self.execute = self.dialect.do_commit, self.dialect.do_execute
        self.last: dict[int, str] = {}
        self.lock = threading.Lock()

    def _remember(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.last[id(conn.connection)] = statement  # the pool's proxy, which do_commit gets

    def _commit(self, connection: Any) -> None:
        self.commit(connection)
        self._maybe_lose(self.last.pop(id(connection), ""))

    def _execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        self.execute(cursor, statement, parameters, context)
        raw = context.root_connection.connection.dbapi_connection if context else None
        if getattr(raw, "autocommit", False):
            self._maybe_lose(statement)

    def _maybe_lose(self, statement: str) -> None:
        # claims, outcomes, marks and dead letters; not submissions, whose lost reply a client
        # meets with an Idempotency-Key (the batch endpoint has none)
        write = "UPDATE tasks" in statement and "INSERT INTO tasks" not in statement
        with self.lock:
            lose = write and self.rng.random() < self.rate
        if lose:
            self.faults.happened("lost commit replies")
            raise self.dialect.loaded_dbapi.InterfaceError("network error (injected: reply lost)")

    def __enter__(self) -> _LostReplies:
        event.listen(self.engine, "before_cursor_execute", self._remember)
        self.dialect.do_commit, self.dialect.do_execute = self._commit, self._execute
        return self

    def __exit__(self, *exc: object) -> None:
        self.dialect.do_commit, self.dialect.do_execute = self.commit, self.execute
        event.remove(self.engine, "before_cursor_execute", self._remember)


def _loop(stop: threading.Event, step, pause: float = 0.0) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            try:
                step()
            except Exception:  # a poller survives the faults it is there to survive
                stop.wait(0.5)
            if pause:
                stop.wait(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _payload(mode: str, key: str) -> dict:
    payload: dict[str, Any] = {"key": key, "mode": "permanent" if mode == "permanent" else "ok"}
    if mode == "transient":
        payload["fail_times"] = 1
    if mode == "long":
        payload["sleep"] = 5
    elif mode == "ok":
        payload["sleep"] = 0.02
    return payload


def run(
    environment: Environment, tasks: int = 60, seed: int = 7, timeout: float = 240, log=print
) -> Report:
    from tests.integration.helpers import call_api, handler
    from tests.processes import Proxy, Worker

    rng = random.Random(seed)
    report = Report()
    faults = Faults(report)
    urls = environment.urls
    with database.engine().begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS fault_runs, fault_effects"))
        stamp = "at timestamptz DEFAULT clock_timestamp()"
        conn.execute(text(f"CREATE TABLE fault_runs (key text, pid int, {stamp})"))
        conn.execute(text(f"CREATE TABLE fault_effects (key text, {stamp})"))

    stop = threading.Event()
    consumer = SqsEventSource(
        environment.sqs,
        urls["LambdaQueue"],
        queue_arn("lambda"),
        handler("consumer"),
        function_name="consumer",
        report_batch_item_failures=True,
        timeout=30,
    )
    dead = [
        SqsEventSource(
            environment.sqs,
            urls[q],
            queue_arn(q),
            handler("deadletter"),
            function_name="deadletter",
            report_batch_item_failures=True,
            timeout=30,
        )
        for q in ("LambdaDeadLetterQueue", "CeleryDeadLetterQueue")
    ]
    threads = [_loop(stop, consumer.poll_once)] + [_loop(stop, d.poll_once) for d in dead]
    threads.append(_loop(stop, reconciler.reconcile, pause=1.0))
    queue_name = urls["CeleryQueue"].rsplit("/", 1)[-1]
    proxy = Proxy(int(environment.env["AWS_ENDPOINT_URL_SQS"].rsplit(":", 1)[-1]))
    workers = [
        Worker(environment.env, queue_name, "--concurrency", "2").wait_ready(),
        Worker(
            environment.env | {"AWS_ENDPOINT_URL_SQS": proxy.endpoint},
            queue_name,
            "--concurrency",
            "1",
        ).wait_ready(),
    ]
    lagging = Worker(  # mid-deploy: it does not know the celery lane's task yet
        environment.env | {"TASK_MODULES": "tasklane.examples"}, queue_name, "--pool", "solo"
    ).wait_ready()
    report.injected["worker with a lagging registry"] += 1
    schedules = _schedules(faults)

    # -- submit, with send failures ---------------------------------------------------------
    plan = [(name, mode) for name, mode, share in MIX for _ in range(round(share * tasks))]
    rng.shuffle(plan)
    expected: dict[str, str] = {}
    keys: dict[str, str] = {}
    transactional: set[str] = set()
    chords: dict[str, tuple[str, list[str]]] = {}  # workflow id → (body key, member keys)
    failing = _SendFailures(SEND_FAILURE_RATE, rng, faults)
    broker.sqs().meta.events.register("before-call.sqs.SendMessageBatch", failing)
    started = time.monotonic()
    with _LostReplies(LOST_REPLY_RATE, rng, faults):
        try:
            for start in range(0, len(plan), BATCH):
                chunk = plan[start : start + BATCH]
                batch_keys = [str(uuid.uuid4()) for _ in chunk]
                body = {
                    "tasks": [
                        {"task": n, "payload": _payload(m, k)}
                        for (n, m), k in zip(chunk, batch_keys, strict=True)
                    ]
                }
                status, _, answer = call_api("POST", "/tasks/batch", body)
                while status == 503:  # a client retries while Postgres restarts
                    report.injected["503 while postgres was down"] += 1
                    time.sleep(0.5)
                    status, _, answer = call_api("POST", "/tasks/batch", body)
                assert status == 202, answer
                for (name, mode), key, task in zip(chunk, batch_keys, answer["tasks"], strict=True):
                    expected[task["id"]] = "failed" if mode == "permanent" else "succeeded"
                    keys[task["id"]] = key
                    if name in TRANSACTIONAL:
                        transactional.add(key)
                    if task["status"] == "pending":
                        report.injected["tasks left pending by a failed send"] += 1
                    if rng.random() < DUPLICATE_RATE:  # an extra copy of the message
                        lane = "LambdaQueue" if "lambda" in name else "CeleryQueue"
                        routing = urls[lane].rsplit("/", 1)[-1]
                        environment.sqs.send_message(
                            QueueUrl=urls[lane],
                            MessageBody=broker.message_body(name, uuid.UUID(task["id"]), routing),
                        )
                        faults.happened("duplicate deliveries")
                if start in (0, BATCH):  # the second lot while Postgres restarts
                    for _ in range(max(1, tasks // 60)):
                        _submit_chord(call_api, rng, expected, keys, transactional, chords)
                if start + BATCH >= len(plan):  # the last lot: cancelled as soon as it runs
                    asked = _submit_cancel_then_deadlock(call_api, expected, keys, transactional)
                if start == 0:
                    _poison(environment, faults)
                    unreadable = _unloadable_payloads(call_api, faults)
                    expected[unreadable] = "failed"
                    keys[unreadable] = unreadable
                if start == BATCH and environment.cluster is not None:
                    with faults.window("postgres restarts"):
                        _restart_postgres(environment.cluster)
            report.submitted = len(expected)
        finally:
            failing.enabled = False

        # -- a cancel during a deadlock (as soon as the task runs) ----------------------------
        canceller = threading.Thread(
            target=_cancel_when_running, args=(call_api, asked, faults, report), daemon=True
        )
        canceller.start()

        # -- the lagging worker leaves; processes killed, a partition --------------------------
        lagging.stop()  # the victim must reach a worker that knows it, not be offered again
        killed = _kill_a_pool_process(call_api, workers, faults, expected, keys, timeout=60)
        report.submitted = len(expected)  # and the victim
        if not killed:
            report.problems.append("no pool process was running a task to kill")
        with faults.window("worker partitioned from SQS"):
            proxy.cut()
            time.sleep(PARTITION_S)
            proxy.restore()
        _wait_for_running_celery_task(timeout=30)
        workers[0].kill()
        faults.happened("celery worker SIGKILLed mid-task")
        workers.append(Worker(environment.env, queue_name, "--concurrency", "2").wait_ready())
        _migrate_behind_an_open_transaction(faults, report)
        canceller.join(60)

        # -- drain --------------------------------------------------------------------------
        deadline = time.monotonic() + timeout
        final: dict[str, tuple[str, int]] = {}
        while time.monotonic() < deadline:
            final = _statuses(list(expected))
            ended = _workflows_ended(list(chords))
            done = ("succeeded", "failed", "cancelled")
            if ended and all(status in done for status, _ in final.values()):
                break
            time.sleep(0.5)
    report.drain_seconds = time.monotonic() - started
    stop.set()
    for worker in workers:
        worker.stop()
    proxy.close()
    for thread in threads:
        thread.join(timeout=10)
    _check_schedules(schedules, report)

    for task_id, want in expected.items():
        status, _ = final.get(task_id, ("missing", 0))
        if status == want == "succeeded":
            report.succeeded += 1
        elif status == want == "failed":
            report.failed_as_expected += 1
        elif status == want == "cancelled":
            report.cancelled_as_asked += 1
        else:
            report.lost += 1
            report.problems.append(f"{task_id}: expected {want}, got {status}")
            report.problems += _story(task_id, [*workers, lagging])
    report.transactional_tasks = len(transactional)
    _classify_extra_executions(set(keys.values()), transactional, faults, report)
    _check_chords(chords, report)
    log(report.table())
    return report


def _classify_extra_executions(
    keys: set[str], transactional: set[str], faults: Faults, report: Report
) -> None:
    """Every effect recorded twice is one execution too many. It is the at-least-once of an
    effect outside tasklane's transaction when a fault hit while the execution before it was
    in flight; with no fault then, it is a defect. A transactional task's effect commits with
    its outcome: recorded twice, it is a defect whatever the faults."""
    runs, effects = _ledger()
    for key in keys:
        done = effects.get(key, [])
        starts = runs.get(key, [])
        if key in transactional:
            if len(done) > 1:
                report.transactional_effects_doubled += 1
                report.problems.append(f"{key}: transactional effect recorded {len(done)} times")
            continue
        for earlier, later in itertools.pairwise(done):
            first = max((s for s in starts if s <= earlier), default=earlier)
            second = max((s for s in starts if s <= later), default=later)
            fault = faults.during(first, second)
            if fault is None:
                report.executed_more_than_once += 1
                report.problems.append(f"{key}: effect recorded again with no fault in flight")
            else:
                report.extra_executions_after_faults += 1
                report.explained.append(f"{key}: again after {fault.kind}")


def _submit_chord(
    call_api,
    rng: random.Random,
    expected: dict[str, str],
    keys: dict[str, str],
    transactional: set[str],
    chords: dict[str, tuple[str, list[str]]],
) -> None:
    member_keys = [str(uuid.uuid4()) for _ in CHORD_HEADER]
    body_key = str(uuid.uuid4())
    body_task = rng.choice(["fault.body_lambda", "fault.body_celery"])
    description = {
        "chord": {
            "header": [
                {"task": name, "payload": _payload(mode, key)}
                for (name, mode), key in zip(CHORD_HEADER, member_keys, strict=True)
            ],
            "body": {"task": body_task, "payload": _payload("ok", body_key)},
        }
    }
    status, _, answer = call_api("POST", "/workflows", description)
    while status == 503:  # a client retries while Postgres restarts
        time.sleep(0.5)
        status, _, answer = call_api("POST", "/workflows", description)
    assert status == 202, answer
    for task, key in zip(answer["tasks"], [*member_keys, body_key], strict=True):
        expected[task["id"]] = "succeeded"
        keys[task["id"]] = key
    transactional.add(body_key)
    chords[answer["id"]] = (body_key, member_keys)


def _schedules(faults: Faults) -> list[str]:
    """Periodic tasks for the run's reconciler passes: two good ones, and between them one that
    fails at run time (as an expression the definition's checks let through would)."""
    from tasklane import Schedule, registry

    class Broken(Schedule):
        def due(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a schedule broken at run time")

    names = ["fault.tick_a", "fault.tick_broken", "fault.tick_b"]
    for name in names:
        kind = Broken if "broken" in name else Schedule
        registry.task(name, schedule=kind("rate(1 minute)", {"key": name, "mode": "ok"}))(_tick)
    faults.happened("a schedule broken at run time")
    return names


def _tick(payload: dict) -> dict:
    return {"tick": payload["key"]}


def _check_schedules(names: list[str], report: Report) -> None:
    """The good schedules fired despite the broken one; then the run's schedules go."""
    from tasklane import registry

    for name in names:
        registry._tasks.pop(name, None)
    with database.engine().connect() as conn:
        fired = dict(
            conn.execute(
                text("SELECT task, count(*) FROM tasks WHERE task = ANY(:n) GROUP BY task"),
                {"n": names},
            ).all()
        )
    for name in names:
        if ("broken" in name) == bool(fired.get(name)):
            report.problems.append(f"schedule {name}: fired {fired.get(name, 0)} ticks")


def _submit_cancel_then_deadlock(
    call_api, expected: dict[str, str], keys: dict[str, str], transactional: set[str]
) -> str:
    """A transactional task that writes, waits to be asked to stop, then loses a deadlock."""
    key = str(uuid.uuid4())
    body = {"task": "fault.lambda_tx", "payload": {"key": key, "mode": "cancel_then_deadlock"}}
    status, _, answer = call_api("POST", "/tasks", body)
    assert status == 202, answer
    expected[answer["id"]], keys[answer["id"]] = "cancelled", key
    transactional.add(key)
    return answer["id"]


def _cancel_when_running(call_api, task_id: str, faults: Faults, report: Report) -> None:
    deadline = time.monotonic() + 60
    unanswered = False  # a cancel answered 503 (an injected outage) may still have committed
    while time.monotonic() < deadline:
        now = _statuses([task_id]).get(task_id, ("", 0))[0]
        if unanswered and now == "cancelled":
            faults.happened("cancel, then a deadlock")
            return
        if now == "running":
            status, _, answer = call_api("POST", f"/tasks/{task_id}/cancel")
            if status == 200:
                faults.happened("cancel, then a deadlock")
                return
            if status == 503:  # "try again later", as a client would
                unanswered = True
                time.sleep(0.1)
                continue
            report.problems.append(f"cancel of {task_id}: {status} {answer}")
            return
        time.sleep(0.1)
    report.problems.append(f"{task_id} never ran, to be cancelled")


def _migrate_behind_an_open_transaction(faults: Faults, report: Report) -> None:
    """The last migration run again (its DDL takes ``tasks``'s ACCESS EXCLUSIVE lock) while an
    application transaction holds a row lock there: it must wait only briefly each time,
    retry, and complete once the transaction ends; the pipeline goes on meanwhile."""
    from tasklane import migrate

    with database.engine().begin() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        previous = str(int(head) - 1).zfill(len(head))
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": previous})
    failures: list[BaseException] = []

    def upgrade() -> None:
        try:
            migrate.upgrade()
        except Exception as exc:
            failures.append(exc)

    with faults.window("a migration behind an open transaction"):
        holder = database.engine().connect()
        holder.execute(text("SELECT id FROM tasks ORDER BY created_at LIMIT 1 FOR UPDATE"))
        migrator = threading.Thread(target=upgrade)
        migrator.start()
        time.sleep(migrate.LOCK_TIMEOUT_MS / 1000 * 2)
        holder.rollback()
        holder.close()
        migrator.join(120)
    with database.engine().connect() as conn:
        now = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    if failures or now != head:
        report.problems.append(f"migration behind an open transaction: {failures} {now}")


def _workflows_ended(ids: list[str]) -> bool:
    try:
        with database.engine().connect() as conn:
            running = conn.execute(
                text(
                    "SELECT count(*) FROM workflows w JOIN tasks t ON t.id = ANY(w.members) "
                    "WHERE w.id::text = ANY(:ids) AND t.status NOT IN ('succeeded', 'failed')"
                ),
                {"ids": ids},
            ).scalar_one()
        return running == 0
    except Exception:
        return False


def _check_chords(chords: dict[str, tuple[str, list[str]]], report: Report) -> None:
    """Each chord's body started after every member had recorded its effect, and every
    workflow ended."""
    report.workflows = len(chords)
    runs, effects = _ledger()
    for workflow_id, (body_key, member_keys) in chords.items():
        view = reads.get_workflow(workflow_id)
        if view.status != "succeeded":
            report.workflows_unfinished += 1
            report.problems.append(f"workflow {workflow_id}: {view.status}")
            continue
        first_body_run = min(runs.get(body_key, [float("inf")]))
        last_member_effect = max(min(effects.get(k, [float("inf")])) for k in member_keys)
        if first_body_run < last_member_effect:
            report.bodies_before_members += 1
            report.problems.append(f"workflow {workflow_id}: its body ran before its members")
        if view.result.get("members") != len(member_keys):
            report.problems.append(f"workflow {workflow_id}: body got {view.result}")


def _story(task_id: str, workers: list) -> list[str]:
    """What happened to a task, for the report: its row, and every worker line naming it."""
    with database.engine().connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, attempts, error->>'type' AS error, claimed_by, dead_letters, "
                "payload->>'mode' AS mode, payload->>'fail_times' AS fail_times "
                "FROM tasks WHERE id = CAST(:id AS uuid)"
            ),
            {"id": task_id},
        ).first()
    lines = [f"  row: {dict(row._mapping) if row else None}"]
    for n, worker in enumerate(workers):
        lines += [f"  worker {n}: {line[:300]}" for line in worker.lines if task_id in line]
    return lines


def _poison(environment: Environment, faults: Faults) -> None:
    for lane in ("LambdaQueue", "CeleryQueue"):
        url = environment.urls[lane]
        routing = url.rsplit("/", 1)[-1]
        bodies = [
            "definitely not a celery message",
            codec.encode(
                "fault.lambda",
                str(uuid.uuid4()),
                routing_key=routing,
                origin="x",
                reply_to="y",
                delivery_tag="z",
            ),
            codec.encode(
                "no.such.task",
                str(uuid.uuid4()),
                routing_key=routing,
                origin="x",
                reply_to="y",
                delivery_tag="z",
            ),
        ]
        for body in bodies:
            environment.sqs.send_message(QueueUrl=url, MessageBody=body)
            faults.happened("poison messages")


def _unloadable_payloads(call_api, faults: Faults) -> str:
    """Payloads no consumer could load: the API refuses them without storing anything; one
    already in the table (stored before the limits, or by hand) must fail its task once."""
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    huge = "x" * (6 * 1024 * 1024)
    for payload, status in ((deep, 400), ({"data": huge}, 413)):
        got, _, answer = call_api("POST", "/tasks", {"task": "fault.lambda", "payload": payload})
        assert got in (status, 503), answer  # 503: the restart may be under way
        faults.happened("payloads refused at the API")
    task_id = uuid.uuid4()
    stored = "[" * 3000 + "]" * 3000
    TaskStore(database.engine()).insert([NewTask(task_id, "fault.lambda", "lambda", stored)])
    faults.happened("unloadable payloads stored")
    return str(task_id)  # left pending: the reconciler sends it


def _restart_postgres(cluster: LocalPostgres) -> None:
    cluster.stop(mode="fast")
    time.sleep(2)
    cluster.start()


def _kill_a_pool_process(
    call_api: Callable, workers: list, faults: Faults, expected: dict, keys: dict, timeout: float
) -> bool:
    """SIGKILL the pool process running a celery-lane task (its worker's main process lives).

    The victim is a task of its own, long enough (5 s) to be caught running whatever the rest
    of the scenario is doing; the pool processes are read afresh each time (a killed one is
    replaced under a new pid)."""
    key = str(uuid.uuid4())
    status, _, answer = call_api(
        "POST", "/tasks", {"task": "fault.celery", "payload": _payload("long", key)}
    )
    assert status == 202, answer
    expected[answer["id"]], keys[answer["id"]] = "succeeded", key
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers_pids = {worker.process.pid for worker in workers}
        children = {pid for pid in procfs.pids() if procfs.parent(pid) in workers_pids}
        with database.engine().connect() as conn:
            victim = conn.execute(
                text(
                    "SELECT r.pid FROM fault_runs r JOIN tasks t ON t.payload->>'key' = r.key "
                    "WHERE r.key = :k AND t.status = 'running' ORDER BY r.at DESC LIMIT 1"
                ),
                {"k": key},
            ).scalar()
        if victim in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
                faults.happened("pool process SIGKILLed mid-task")
                return True
        time.sleep(0.1)
    return False


def _statuses(ids: list[str]) -> dict[str, tuple[str, int]]:
    try:
        with database.engine().connect() as conn:
            rows = conn.execute(
                text("SELECT id::text, status, attempts FROM tasks WHERE id::text = ANY(:ids)"),
                {"ids": ids},
            )
            return {r[0]: (r[1], r[2]) for r in rows}
    except Exception:
        return {}


def _ledger() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each key's execution starts and effects, as epoch seconds, in order."""
    runs: dict[str, list[float]] = defaultdict(list)
    effects: dict[str, list[float]] = defaultdict(list)
    with database.engine().connect() as conn:
        for key, at in conn.execute(
            text("SELECT key, extract(epoch FROM at) FROM fault_runs ORDER BY at")
        ):
            runs[key].append(float(at))
        for key, at in conn.execute(
            text("SELECT key, extract(epoch FROM at) FROM fault_effects ORDER BY at")
        ):
            effects[key].append(float(at))
    return runs, effects


def _wait_for_running_celery_task(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.engine().connect() as conn:
            running = conn.execute(
                text("SELECT count(*) FROM tasks WHERE lane = 'celery' AND status = 'running'")
            ).scalar_one()
        if running:
            return
        time.sleep(0.1)


def main() -> None:  # pragma: no cover - the larger run, by hand
    import shutil
    import tempfile
    from pathlib import Path

    import boto3
    from tasklane import migrate
    from tasklane.config import settings
    from tasklane.local.postgres import free_port
    from tasklane.local.sqs import FAKE_CREDENTIALS, MotoServer, create_queues

    from tests.conftest import TASK_MODULES, queue_specs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="tasklane-faults-"))
    cluster = LocalPostgres(data / "pg", free_port(), durable=False)
    data.chmod(0o755)
    cluster.start()
    cluster.create_database("faults")
    moto = MotoServer(free_port()).start()
    try:
        client = boto3.client(
            "sqs",
            endpoint_url=moto.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        urls = create_queues(client, queue_specs("faults", MAX_RECEIVES))
        env = FAKE_CREDENTIALS | {
            "DATABASE_URL": cluster.url("faults"),
            "AWS_ENDPOINT_URL_SQS": moto.endpoint,
            "TASK_MODULES": TASK_MODULES,
            "LAMBDA_QUEUE_URL": urls["LambdaQueue"],
            "CELERY_QUEUE_URL": urls["CeleryQueue"],
            "LAMBDA_DLQ_URL": urls["LambdaDeadLetterQueue"],
            "CELERY_DLQ_URL": urls["CeleryDeadLetterQueue"],
            "PENDING_GRACE_SECONDS": "1",
            "QUEUED_GRACE_SECONDS": "30",
        }
        os.environ.update(env)
        settings.cache_clear()
        migrate.upgrade(database.engine())
        report = run(
            Environment(env, urls, client, cluster), tasks=args.tasks, seed=args.seed, timeout=900
        )
        for line in report.problems[:20] + report.explained[:20]:
            print("  ", line)
        if args.json:
            Path(args.json).write_text(json.dumps(report.__dict__, default=str, indent=1))
        failed = report.lost or report.executed_more_than_once
        bad = report.transactional_effects_doubled or report.bodies_before_members
        raise SystemExit(1 if failed or bad or report.workflows_unfinished else 0)
    finally:
        moto.stop()
        cluster.stop(mode="immediate")
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
