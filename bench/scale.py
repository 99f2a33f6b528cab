"""10. Scale: does a task cost the same when the table holds millions as when it holds thousands?

For each size (10k and 1M tasks; 10M with ``TASKLANE_BENCH_SCALE_10M=1``, about 10 minutes more),
a database of its own is filled in SQL with a realistic mix: almost all finished (succeeded, some
failed and cancelled) over 30 days, a few thousand live (queued, running, pending, scheduled),
50 owners, 20 task names. Then, on that table, the medians of: a bulk submission of 100, the
claims of a batch of 10 and their outcomes, reading one task, the reconciler's scans (missing
messages, due tasks), and the listing's first page, a page half-way down, and one owner's first
page. Each figure at the largest size is compared with the same figure at 10k (target: at most
1.2 times). Table and index sizes are reported per million tasks.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, make_url, text
from tasklane import migrate
from tasklane.lifecycle import Status
from tasklane.store import Claim, NewTask, TaskFilter, TaskStore

from bench.env import BenchEnv, median

LIVE = 4_000
FILL = """
INSERT INTO tasks (id, task, lane, status, payload, result, attempts, owner, created_at,
                   updated_at, started_at, finished_at, run_at, lease_until)
SELECT gen_random_uuid(),
       'app.task' || (mod(n, 20)),
       CASE WHEN mod(n, 3) = 0 THEN 'celery' ELSE 'lambda' END,
       s.status,
       jsonb_build_object('order', n, 'text', repeat('x', 120)),
       CASE WHEN s.status = 'succeeded' THEN jsonb_build_object('ok', n) END,
       CASE WHEN s.status IN ('pending', 'scheduled') THEN 0 ELSE 1 END,
       'owner-' || (mod(n, 50)),
       c.at,
       CASE WHEN n <= :live THEN now() ELSE c.at END,
       CASE WHEN s.status NOT IN ('pending', 'scheduled', 'queued') THEN c.at END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled') THEN c.at + interval '1 s' END,
       CASE WHEN s.status = 'scheduled' THEN now() + interval '1 day' END,
       CASE WHEN s.status = 'running' THEN now() + interval '1 hour' END
FROM generate_series(1, :rows) AS n
CROSS JOIN LATERAL (SELECT now() - (n * interval '30 days') / :rows AS at) AS c  -- newest first
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN n <= :live THEN (ARRAY['queued', 'running', 'pending', 'scheduled'])[1 + mod(n, 4)]
        WHEN mod(n, 20) = 0 THEN 'failed'
        WHEN mod(n, 50) = 1 THEN 'cancelled'
        ELSE 'succeeded'
    END AS status
) AS s
"""


def _sizes() -> list[int]:
    sizes = [10_000, 1_000_000]
    if os.environ.get("TASKLANE_BENCH_SCALE_10M") == "1":
        sizes.append(10_000_000)
    return sizes


def _database(bench: BenchEnv, rows: int) -> Any:
    """A migrated database of its own, filled with ``rows`` tasks and analysed."""
    url = make_url(bench.env["DATABASE_URL"])
    name = f"scale_{rows}"
    with create_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_engine(url.set(database=name), pool_size=2)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        # the same live tasks at every size, just written (as in a healthy system: the
        # reconciler's scans find nothing to resend, and cost what finding nothing costs)
        conn.execute(text(FILL), {"rows": rows, "live": min(LIVE, rows // 2)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tasks"))
    return engine


def _timed(fn: Callable[[], Any], reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs (after one unmeasured run)."""
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return median(samples)


def _measure(engine: Any, rows: int, reps: int) -> dict[str, float]:
    store = TaskStore(engine)
    with engine.connect() as conn:
        ids = list(
            conn.execute(text("SELECT id FROM tasks TABLESAMPLE SYSTEM (1) LIMIT 500")).scalars()
        )
        middle = conn.execute(
            text("SELECT created_at, id FROM tasks ORDER BY created_at DESC, id DESC OFFSET :n"),
            {"n": rows // 2},
        ).first()
    picks = iter(ids * (1 + (reps + 1) // max(1, len(ids))))

    def submit() -> None:
        store.insert([NewTask(uuid.uuid4(), "app.task1", "lambda", '{"n": 1}') for _ in range(100)])

    figures = {"bulk submit of 100 ms": _timed(submit, reps)}
    # a consumer's batch: ten claims, then ten outcomes (each batch inserted and queued
    # outside the timing)
    claim_times, outcome_times = [], []
    for _ in range(reps + 1):
        new = [NewTask(uuid.uuid4(), "app.task1", "lambda", '{"n": 1}') for _ in range(10)]
        store.insert(new)
        store.mark_queued([t.id for t in new])
        start = time.perf_counter()
        tokens = []
        for t in new:
            token = f"bench#{t.id.hex[:8]}"
            store.claim(Claim(t.id, t.task, token), 900)
            tokens.append((t.id, token))
        claim_times.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        for task_id, token in tokens:
            store.settle(task_id, token, '{"ok": true}')
        outcome_times.append((time.perf_counter() - start) * 1000)
    figures["claim a batch of 10 ms"] = median(claim_times[1:])
    figures["outcomes of 10 ms"] = median(outcome_times[1:])
    figures["read one task ms"] = _timed(lambda: store.get(next(picks)), reps)
    figures["reconciler scan ms"] = _timed(
        lambda: store.claim_stale(60, 900, quiet_lanes=("lambda", "celery")), reps
    )
    figures["due-task scan ms"] = _timed(lambda: store.claim_due(900), reps)
    figures["list first page ms"] = _timed(lambda: store.find(TaskFilter(), 50), reps)
    figures["list half-way page ms"] = _timed(
        lambda: store.find(TaskFilter(), 50, (middle.created_at, middle.id)), reps
    )
    figures["list one owner's first page ms"] = _timed(
        lambda: store.find(TaskFilter(owner="owner-7"), 50), reps
    )
    figures["list failed, first page ms"] = _timed(
        lambda: store.find(TaskFilter(status=Status.FAILED), 50), reps
    )
    return figures


def _sizes_of(engine: Any, rows: int) -> dict[str, float]:
    """Megabytes per million tasks: the table (with its TOAST), and its indexes."""
    with engine.connect() as conn:
        heap = conn.execute(text("SELECT pg_table_size('tasks')")).scalar_one()
        indexes = conn.execute(text("SELECT pg_indexes_size('tasks')")).scalar_one()
        count = conn.execute(
            text("SELECT count(*) FROM pg_indexes WHERE tablename = 'tasks'")
        ).scalar_one()
    per_million = 1_000_000 / rows / (1024 * 1024)
    return {
        "table MB per million tasks": heap * per_million,
        "indexes MB per million tasks": indexes * per_million,
        "indexes on tasks": float(count),
    }


def run(bench: BenchEnv) -> dict:
    sizes = [1_000, 20_000] if bench.quick else _sizes()
    reps = bench.n(30, 3)
    per_size: dict[int, dict[str, float]] = {}
    sizes_report: dict[str, float] = {}
    for rows in sizes:
        engine = _database(bench, rows)
        try:
            per_size[rows] = _measure(engine, rows, reps)
            if rows == sizes[-1]:
                sizes_report = _sizes_of(engine, rows)
        finally:
            engine.dispose()
    smallest, largest = sizes[0], sizes[-1]
    label = {10_000: "10k", 1_000_000: "1M", 10_000_000: "10M"}
    figures: dict[str, float] = {}
    targets: dict[str, tuple[str, float]] = {}
    for name in per_size[smallest]:
        for rows in sizes:
            figures[f"{name} at {label.get(rows, rows)}"] = per_size[rows][name]
        ratio = f"{name.removesuffix(' ms')}: {label.get(largest, largest)} vs " + label.get(
            smallest, str(smallest)
        )
        figures[ratio] = per_size[largest][name] / per_size[smallest][name]
        targets[ratio] = ("<=", 1.2)
    figures |= sizes_report
    return {
        "name": "scale",
        "workload": f"tables of {', '.join(label.get(s, str(s)) for s in sizes)} tasks "
        f"({LIVE:,} live), medians of {reps}",
        "figures": figures,
        "targets": targets,
    }
