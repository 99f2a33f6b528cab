"""11. Many consumers: one backlog of trivial lambda-lane tasks drained by 1, 2, 4 and 8
consumer processes (each the consumer function behind its own event source, as Lambda runs
containers: tests/drain.py), against one Postgres. Throughput is the backlog over the time from
the first record handled to the last; it must not collapse as consumers are added (8 against
the best of the others, at least 0.8). The connections each consumer held at most are sampled
from pg_stat_activity (the budget: one per container)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import text
from tasklane import database, submit_many

from bench.env import ROOT, BenchEnv
from tests.drain import Connections, spawn

COUNTS = (1, 2, 4, 8)


def _drain(bench: BenchEnv, consumers: int, backlog: int) -> tuple[float, int, int]:
    bench.reset_queues()
    submit_many([("bench.noop", n) for n in range(backlog)])
    env = os.environ | bench.env | {"PYTHONPATH": str(ROOT)}
    workdir = Path(tempfile.mkdtemp(prefix=f"tasklane-bench-{consumers}-consumers-"))
    with Connections(bench.env["DATABASE_URL"]) as connections:
        drains = [spawn(bench.urls["LambdaQueue"], env, workdir, idle=5) for _ in range(consumers)]
        reports = [drain.report(timeout=600) for drain in drains]
    handled = sum(r["records"] for r in reports)
    with database.engine().connect() as conn:
        states = conn.execute(
            text("SELECT status, attempts, count(*) FROM tasks GROUP BY status, attempts")
        ).all()
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
    figures["most connections held by one consumer"] = float(most)
    figures["tasks claimed more than once"] = float(twice)
    return {
        "name": "many consumers",
        "workload": f"a backlog of {backlog:,} trivial tasks, consumer processes on one Postgres",
        "figures": figures,
        "targets": {
            "last vs best of the others": (">=", 0.8),
            "most connections held by one consumer": ("<=", 1.0),
            "tasks claimed more than once": ("<=", 0.0),
        },
    }
