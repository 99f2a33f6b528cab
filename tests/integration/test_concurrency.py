"""Many consumers at once: eight lambda-lane consumer processes (each the consumer function
behind its own event source, as Lambda runs containers) and two Celery workers drain one
backlog against one Postgres. Every task runs once, and no process holds more connections than
the budget (docs/capacity.md): one per consumer container, one per worker pool process."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import create_engine, text
from tasklane import submit_many

from tests.conftest import TASK_MODULES, wait_for
from tests.drain import Connections, spawn
from tests.processes import PYTHONPATH, Worker

CONSUMERS = 8
WORKERS = 2
LAMBDA_TASKS = 240
CELERY_TASKS = 40


@pytest.mark.slow
def test_eight_consumers_and_two_workers_drain_one_backlog_each_task_once(stack, tmp_path):
    ledger = tmp_path / "ledger"
    items = [("test.ledger", {"ledger": str(ledger), "n": n}) for n in range(LAMBDA_TASKS)]
    items += [
        ("test.ledger_celery", {"ledger": str(ledger), "n": n})
        for n in range(LAMBDA_TASKS, LAMBDA_TASKS + CELERY_TASKS)
    ]
    handles = submit_many(items)  # the backlog, before anyone drains it
    env = stack.env | {"PYTHONPATH": PYTHONPATH, "TASK_MODULES": TASK_MODULES}
    celery_queue = stack.celery_queue.rsplit("/", 1)[-1]
    with Connections(stack.env["DATABASE_URL"]) as connections:
        workers = [Worker(stack.env, celery_queue, "--concurrency", "1") for _ in range(WORKERS)]
        stack.workers.extend(workers)
        for worker in workers:
            worker.wait_ready()
        consumers = [
            spawn(stack.lambda_queue, dict(os.environ) | env, tmp_path / "consumers")
            for _ in range(CONSUMERS)
        ]
        reports = [consumer.report(timeout=240) for consumer in consumers]

        def all_succeeded() -> bool:
            with create_engine(stack.env["DATABASE_URL"]).connect() as conn:
                done = conn.execute(
                    text("SELECT count(*) FROM tasks WHERE status = 'succeeded'")
                ).scalar_one()
            return done == len(handles)

        wait_for(all_succeeded, 120, interval=0.5, what="the celery lane's tasks")
        time.sleep(0.2)  # a last sample

    runs = sorted(int(line) for line in ledger.read_text().split())
    assert runs == list(range(LAMBDA_TASKS + CELERY_TASKS))  # every task ran, each once
    with create_engine(stack.env["DATABASE_URL"]).connect() as conn:
        attempts = conn.execute(text("SELECT DISTINCT attempts FROM tasks")).scalars().all()
    assert attempts == [1]  # no task was claimed twice
    # SQS delivers at least once: a record delivered twice is acknowledged, not run again
    assert sum(r["records"] for r in reports) >= LAMBDA_TASKS
    consumer_conns = {k: v for k, v in connections.most.items() if "ConsumerFunction" in k}
    assert consumer_conns and max(consumer_conns.values()) == 1, connections.most
    mine = f"tasklane app {os.getpid()}"  # this test's own submissions and checks
    worker_conns = {
        k: v for k, v in connections.most.items() if "ConsumerFunction" not in k and k != mine
    }
    assert worker_conns and max(worker_conns.values()) == 1, connections.most
