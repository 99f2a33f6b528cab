"""Fault injection: drive the real pipeline with many tasks while breaking things, then count.

The parts are real: Postgres, moto's SQS server, the producer and consumer handlers (through the
emulated event source), the dead-letter function on both DLQs, the reconciler, and Celery worker
processes. While tasks flow, the run injects:

- task exceptions, transient (fail the first execution) and permanent (always);
- SQS send failures at submit (a share of SendMessageBatch calls fail: tasks stay pending);
- duplicate deliveries (extra copies of messages already sent);
- poison messages (undecodable bodies, unknown tasks, ids with no row);
- tasks longer than the queue's visibility timeout (celery lane);
- a Celery worker SIGKILLed mid-task, replaced by a new one;
- a Postgres restart (when the run owns the cluster).

Every task records each execution and its effect in ledger tables. The report counts submitted,
succeeded, failed as expected, lost (not finished, or finished wrongly), executed more than once
(an effect recorded twice), and the time to drain.

The tests run a small scenario (tests/integration/test_faults.py). A larger run starts its own
Postgres and moto:  ``python -m tests.faultsuite --tasks 500``
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from tasklane import broker, codec, database, service
from tasklane.local.events import queue_arn
from tasklane.local.eventsource import SqsEventSource
from tasklane.local.postgres import LocalPostgres

#: (task name, mode, share of the run); expected outcome follows from the mode.
MIX = [
    ("fault.lambda", "ok", 0.40),
    ("fault.lambda", "transient", 0.15),
    ("fault.lambda", "permanent", 0.04),
    ("fault.celery", "ok", 0.25),
    ("fault.celery", "transient", 0.08),
    ("fault.celery", "long", 0.04),
    ("fault.celery", "permanent", 0.04),
]
SEND_FAILURE_RATE = 0.15
DUPLICATE_RATE = 0.10
BATCH = 20


@dataclass
class Environment:
    """Where the run's parts are; the queues are created by the caller with short timeouts."""

    env: dict[str, str]
    urls: dict[str, str]
    sqs: Any
    cluster: LocalPostgres | None = None
    visibility: int = 2


@dataclass
class Report:
    submitted: int = 0
    succeeded: int = 0
    failed_as_expected: int = 0
    lost: int = 0
    executed_more_than_once: int = 0
    drain_seconds: float = 0.0
    injected: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("submitted", self.submitted),
            ("succeeded", self.succeeded),
            ("failed as expected", self.failed_as_expected),
            ("lost", self.lost),
            ("executed more than once", self.executed_more_than_once),
            ("time to drain", f"{self.drain_seconds:.1f} s"),
        ] + [(f"injected: {k}", v) for k, v in sorted(self.injected.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class _SendFailures:
    """Fails a share of SendMessageBatch calls, as a network fault or throttling would."""

    def __init__(self, rate: float, rng: random.Random, report: Report) -> None:
        self.rate, self.rng, self.report = rate, rng, report
        self.enabled = True

    def __call__(self, **_: Any) -> None:
        if self.enabled and self.rng.random() < self.rate:
            from botocore.exceptions import EndpointConnectionError

            self.report.injected["send failures (batches)"] += 1
            raise EndpointConnectionError(endpoint_url="injected://sqs")


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
    from tests.processes import Worker

    rng = random.Random(seed)
    report = Report()
    urls = environment.urls
    with database.engine().begin() as conn:
        conn.execute(
            text("CREATE TABLE IF NOT EXISTS fault_runs (key text, at timestamptz DEFAULT now())")
        )
        conn.execute(text("CREATE TABLE IF NOT EXISTS fault_effects (key text)"))
        conn.execute(text("TRUNCATE fault_runs, fault_effects"))

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
    threads.append(_loop(stop, service.reconcile, pause=1.0))
    queue_name = urls["CeleryQueue"].rsplit("/", 1)[-1]
    workers = [Worker(environment.env, queue_name, "--concurrency", "2").wait_ready()]

    # -- submit, with send failures --------------------------------------------------------
    plan = [(name, mode) for name, mode, share in MIX for _ in range(round(share * tasks))]
    rng.shuffle(plan)
    expected: dict[str, str] = {}
    keys: dict[str, str] = {}
    failing = _SendFailures(SEND_FAILURE_RATE, rng, report)
    broker.sqs().meta.events.register("before-call.sqs.SendMessageBatch", failing)
    started = time.monotonic()
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
                if task["status"] == "pending":
                    report.injected["tasks left pending by a failed send"] += 1
                if rng.random() < DUPLICATE_RATE:  # an extra copy of the message
                    lane = "LambdaQueue" if name == "fault.lambda" else "CeleryQueue"
                    routing = urls[lane].rsplit("/", 1)[-1]
                    environment.sqs.send_message(
                        QueueUrl=urls[lane],
                        MessageBody=broker.message_body(name, uuid.UUID(task["id"]), routing),
                    )
                    report.injected["duplicate deliveries"] += 1
            if start == 0:
                _poison(environment, report)
            if start == BATCH and environment.cluster is not None:
                _restart_postgres(environment.cluster, report)
        report.submitted = len(expected)
    finally:
        failing.enabled = False

    # -- a worker killed mid-task -------------------------------------------------------------
    _wait_for_running_celery_task(timeout=30)
    workers[0].kill()
    report.injected["celery worker SIGKILLed mid-task"] += 1
    workers.append(Worker(environment.env, queue_name, "--concurrency", "2").wait_ready())

    # -- drain ----------------------------------------------------------------------------------
    deadline = time.monotonic() + timeout
    final: dict[str, tuple[str, int]] = {}
    while time.monotonic() < deadline:
        final = _statuses(list(expected))
        if all(status in ("succeeded", "failed") for status, _ in final.values()):
            break
        time.sleep(0.5)
    report.drain_seconds = time.monotonic() - started
    stop.set()
    for worker in workers:
        worker.stop()
    for thread in threads:
        thread.join(timeout=10)

    effects = _effects()
    for task_id, want in expected.items():
        status, _ = final.get(task_id, ("missing", 0))
        if status == want == "succeeded":
            report.succeeded += 1
        elif status == want == "failed":
            report.failed_as_expected += 1
        else:
            report.lost += 1
            report.problems.append(f"{task_id}: expected {want}, got {status}")
        if effects.get(keys[task_id], 0) > 1:
            report.executed_more_than_once += 1
            report.problems.append(f"{task_id}: effect recorded {effects[keys[task_id]]} times")
    log(report.table())
    return report


def _poison(environment: Environment, report: Report) -> None:
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
            report.injected["poison messages"] += 1


def _restart_postgres(cluster: LocalPostgres, report: Report) -> None:
    cluster.stop(mode="fast")
    time.sleep(2)
    cluster.start()
    report.injected["postgres restarts"] += 1


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


def _effects() -> dict[str, int]:
    with database.engine().connect() as conn:
        rows = conn.execute(text("SELECT key, count(*) FROM fault_effects GROUP BY key"))
        return {r[0]: r[1] for r in rows}


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
    import os
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
        urls = create_queues(client, queue_specs("faults"))
        env = FAKE_CREDENTIALS | {
            "DATABASE_URL": cluster.url("faults"),
            "AWS_ENDPOINT_URL_SQS": moto.endpoint,
            "TASK_MODULES": TASK_MODULES,
            "LAMBDA_QUEUE_URL": urls["LambdaQueue"],
            "CELERY_QUEUE_URL": urls["CeleryQueue"],
            "LAMBDA_DLQ_URL": urls["LambdaDeadLetterQueue"],
            "CELERY_DLQ_URL": urls["CeleryDeadLetterQueue"],
            "PENDING_GRACE_SECONDS": "1",
        }
        os.environ.update(env)
        settings.cache_clear()
        with database.engine().begin() as conn:
            migrate.upgrade(conn)
        report = run(
            Environment(env, urls, client, cluster), tasks=args.tasks, seed=args.seed, timeout=900
        )
        for problem in report.problems[:20]:
            print("  ", problem)
        raise SystemExit(1 if report.lost or report.executed_more_than_once else 0)
    finally:
        moto.stop()
        cluster.stop(mode="immediate")
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
