"""11. Many consumers: one backlog of trivial lambda-lane tasks drained by 1, 2, 4 and 8
consumer processes (each the consumer function behind its own event source, as Lambda runs
containers: tests/drain.py), against one Postgres. Throughput is the backlog over the time from
the first record handled to the last; it must not collapse as consumers are added (8 against
the best of the others, at least 0.8). The connections each consumer held at most are sampled
from pg_stat_activity (the budget: one per container, one per worker pool process). Then 8
consumers and 2 Celery workers drain one backlog of both lanes' tasks.

Twice: on moto's SQS server, and with the queue held in the consumer processes (each its share
of the backlog, the messages as the producer encodes them). moto's ReceiveMessage reads the
whole queue and shares the 2 CPUs, so the first measures moto more than tasklane; the second
measures the consumers and Postgres alone."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from tasklane import broker, database, submit_many
from tasklane.ids import new_id
from tasklane.lanes import queue_name
from tasklane.store import NewTask, TaskStore

from bench.env import ROOT, BenchEnv
from tests.drain import Connections, spawn, start_together

COUNTS = (1, 2, 4, 8)


def _drain(bench: BenchEnv, consumers: int, backlog: int) -> tuple[float, int, int]:
    bench.reset_queues()
    submit_many([("bench.noop", n) for n in range(backlog)])
    env = _consumer_env(bench)
    workdir = Path(tempfile.mkdtemp(prefix=f"tasklane-bench-{consumers}-consumers-"))
    with Connections(bench.env["DATABASE_URL"]) as connections:
        go = workdir / "go"
        drains = [
            spawn(bench.urls["LambdaQueue"], env, workdir, idle=5, go=go) for _ in range(consumers)
        ]
        start_together(drains, go)
        reports = [drain.report(timeout=600) for drain in drains]
    handled = sum(r["records"] for r in reports)
    states = _states()
    unfinished = sum(n for status, _, n in states if status != "succeeded")
    if unfinished:
        raise RuntimeError(f"{consumers} consumers, {handled} records: {states}; logs: {workdir}")
    # a record delivered twice (SQS is at least once) is acknowledged, not claimed again
    twice = sum(n for _, attempts, n in states if attempts > 1)
    if twice:
        print(f"tasks claimed more than once: the consumers' logs are in {workdir}")
    else:
        shutil.rmtree(workdir)
    started = min(r["first"] for r in reports if r["first"])
    ended = max(r["last"] for r in reports if r["last"])
    most = max((v for k, v in connections.most.items() if "ConsumerFunction" in k), default=0)
    return backlog / (ended - started), most, twice


def _drain_both_lanes(bench: BenchEnv, backlog: int) -> tuple[float, int, int]:
    """8 consumer processes and 2 Celery workers (one pool process each) drain one backlog,
    a fifth of it celery-lane tasks, submitted once all are ready: tasks a second from the
    submission to the last outcome, the most connections any one process held, and the tasks
    claimed more than once."""
    from tests.processes import Worker

    bench.reset_queues()
    celery = backlog // 5
    items = [("bench.noop", n) for n in range(backlog - celery)]
    items += [("bench.noop_celery", n) for n in range(celery)]
    env = _consumer_env(bench)
    workdir = Path(tempfile.mkdtemp(prefix="tasklane-bench-both-lanes-"))
    mine = f"tasklane app {os.getpid()}"  # the bench's own submissions and checks
    with Connections(bench.env["DATABASE_URL"]) as connections:
        workers = [
            Worker(bench.env, queue_name(bench.urls["CeleryQueue"]), "--concurrency", "1")
            for _ in range(2)
        ]
        try:
            for worker in workers:
                worker.wait_ready()
            go = workdir / "go"
            drains = [
                spawn(bench.urls["LambdaQueue"], env, workdir, idle=5, go=go) for _ in range(8)
            ]
            # everyone ready: the backlog arrives, and the clock starts
            started = start_together(drains, go, before=lambda: submit_many(items))
            for drain in drains:
                drain.report(timeout=600)
            deadline = time.monotonic() + 300
            while (states := _states()) != [("succeeded", 1, backlog)]:
                if time.monotonic() > deadline or any(n for s, _, n in states if s == "failed"):
                    raise RuntimeError(f"both lanes: {states}; logs: {workdir}")
                if sum(n for s, _, n in states if s == "succeeded") == backlog:
                    break  # done, some claimed twice: counted below
                time.sleep(0.1)
            ended = _last_finished()
        finally:
            for worker in workers:
                worker.stop()
    twice = sum(n for _, attempts, n in _states() if attempts > 1)
    if not twice:
        shutil.rmtree(workdir)
    most = max(v for k, v in connections.most.items() if k != mine)
    return backlog / (ended - started), most, twice


def _consumer_env(bench: BenchEnv) -> dict[str, str]:
    """A consumer process's environment: the bench's, importing this checkout."""
    return os.environ | bench.env | {"PYTHONPATH": str(ROOT)}


def _states() -> list[tuple[str, int, int]]:
    """How many tasks there are of each status and attempt count."""
    with database.engine().connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT status, attempts, count(*) FROM tasks GROUP BY status, attempts "
                    "ORDER BY status, attempts"
                )
            )
        ]


def _last_finished() -> float:
    with database.engine().connect() as conn:
        return float(
            conn.execute(text("SELECT extract(epoch FROM max(finished_at)) FROM tasks")).scalar()
        )


def _messages(bench: BenchEnv, backlog: int) -> list[dict]:
    """A backlog stored and ``queued`` as if sent, and its messages as ReceiveMessage would
    return them (the claim checks, encoded as the producer encodes them)."""
    bench.reset_queues()
    new = [NewTask(new_id(), "bench.noop", "lambda", json.dumps(n)) for n in range(backlog)]
    store = TaskStore(database.engine())
    store.insert(new)
    store.mark_queued([t.id for t in new])
    queue = queue_name(bench.urls["LambdaQueue"])
    return [
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": f"in-memory-{t.id}",
            "Body": broker.message_body(t.task, t.id, queue),
        }
        for t in new
    ]


def _drain_in_memory(bench: BenchEnv, consumers: int, backlog: int) -> tuple[float, int]:
    """The same drain with the queue held in the consumer processes (each its share of the
    backlog): consumers and Postgres alone, without moto."""
    messages = _messages(bench, backlog)
    env = _consumer_env(bench)
    workdir = Path(tempfile.mkdtemp(prefix=f"tasklane-bench-{consumers}-in-memory-"))
    go = workdir / "go"
    drains = [
        spawn(
            bench.urls["LambdaQueue"],
            env,
            workdir,
            idle=0.5,
            messages=messages[i::consumers],
            go=go,
        )
        for i in range(consumers)
    ]
    began = start_together(drains, go)
    reports = [drain.report(timeout=600) for drain in drains]
    states = _states()
    if states != [("succeeded", 1, backlog)]:
        raise RuntimeError(f"{consumers} consumers in memory: {states}; logs: {workdir}")
    shutil.rmtree(workdir)
    # Each process has a share of its own, and the last to finish its share ends the drain
    # with the CPUs half idle (a queue they shared would have fed the others): the rate is
    # taken while every consumer was still busy, from the go to the first to run out.
    busy_until = min(r["last"] for r in reports)
    done = sum(n for r in reports for at, n in r["batches"] if at <= busy_until)
    return done / (busy_until - began), sum(r["records"] for r in reports)


def run(bench: BenchEnv) -> dict:
    backlog = bench.n(2_000, 100)
    figures: dict[str, float] = {}
    most = twice = 0
    for consumers in COUNTS if not bench.quick else (1, 2):
        rate, held, again = _drain(bench, consumers, backlog)
        figures[f"tasks/s with {consumers} consumer{'s' if consumers > 1 else ''}"] = rate
        most, twice = max(most, held), twice + again
    rates = list(figures.values())
    figures["last vs best of the others"] = rates[-1] / max(rates[:-1])
    rate, held, again = _drain_both_lanes(bench, backlog)
    figures["tasks/s with 8 consumers and 2 Celery workers, both lanes"] = rate
    most, twice = max(most, held), twice + again
    memory_backlog = bench.n(4_000, 200)
    in_memory = []
    for consumers in COUNTS if not bench.quick else (1, 2):
        rate, _ = _drain_in_memory(bench, consumers, memory_backlog)
        in_memory.append(rate)
        label = f"consumer{'s' if consumers > 1 else ''}"
        figures[f"tasks/s with {consumers} {label}, queue in memory"] = rate
    figures["in memory: last vs best of the others"] = in_memory[-1] / max(in_memory[:-1])
    figures["most connections held by one process"] = float(most)
    figures["tasks claimed more than once"] = float(twice)
    return {
        "name": "many consumers",
        "workload": f"backlogs of {backlog:,} trivial tasks on moto (both lanes: a fifth in "
        f"the celery lane) and {memory_backlog:,} in memory, drained by consumer processes "
        "(and Celery workers) on one Postgres",
        "figures": figures,
        "targets": {
            "last vs best of the others": (">=", 0.8),
            "in memory: last vs best of the others": (">=", 0.8),
            "most connections held by one process": ("<=", 1.0),
            "tasks claimed more than once": ("<=", 0.0),
        },
    }
