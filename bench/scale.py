"""10. Scale: does a task cost the same when the table holds millions as when it holds thousands?

For each size (10k and 1M tasks; 10M with ``TASKLANE_BENCH_SCALE_10M=1``, about 10 minutes more),
a database of its own is filled in SQL with a realistic mix: almost all finished (succeeded, some
failed and cancelled) over 30 days, a few thousand live (queued, running, scheduled),
50 owners, 20 task names. Then, on that table, the medians of: a bulk submission of 100, the
claims of a batch of 10 and their outcomes, reading one task, the reconciler's scans (missing
messages, due tasks), and the listing's first page, a page half-way down, and one owner's first
page. Each figure at the largest size is compared with the same figure at 10k (target: at most
1.2 times). Table and index sizes are reported per million tasks.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, make_url, text
from tasklane import migrate
from tasklane.ids import new_id
from tasklane.lifecycle import Status
from tasklane.store import Claim, NewTask, TaskFilter, TaskStore

from bench.env import BenchEnv, median
from tests import procfs

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
        WHEN n <= :live THEN (ARRAY['queued', 'running', 'scheduled'])[1 + mod(n, 3)]
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
        # the same live tasks at every size, as in a healthy system: none pending (a task is
        # pending only between its commit and its send), so the reconciler's scans find nothing
        # to send again and cost what finding nothing costs
        conn.execute(text(FILL), {"rows": rows, "live": min(LIVE, rows // 2)})
    with engine.begin() as conn:  # a fill of minutes is older than the reconciler's grace
        conn.execute(
            text(
                "UPDATE tasks SET updated_at = now() "
                "WHERE status IN ('pending', 'scheduled', 'queued', 'running')"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tasks"))
        # the fill's dirty pages written now, not by a checkpoint during the measurements
        conn.execute(text("CHECKPOINT"))
    return engine


def _ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _operations(engine: Any, rows: int, reps: int) -> Callable[[], dict[str, float]]:
    """One round of every measured operation on this table: milliseconds by name."""
    store = TaskStore(engine)
    with engine.connect() as conn:
        share = min(100.0, 100 * 2_000 / rows)  # about 2,000 tasks, from all over the table
        ids = list(
            conn.execute(
                text("SELECT id FROM tasks TABLESAMPLE BERNOULLI (:share) LIMIT 2000"),
                {"share": share},
            ).scalars()
        )
        middle = conn.execute(
            text("SELECT created_at, id FROM tasks ORDER BY created_at DESC, id DESC OFFSET :n"),
            {"n": rows // 2},
        ).first()
    picks = itertools.cycle(ids)

    submitted: list[NewTask] = []

    def submit() -> None:
        submitted[:] = [NewTask(new_id(), "app.task1", "lambda", '{"n": 1}') for _ in range(100)]
        store.insert(submitted)

    def one_round() -> dict[str, float]:
        timings = {"bulk submit of 100 ms": _ms(submit)}
        store.mark_queued([t.id for t in submitted])  # sent, as the producer would have
        # a consumer's batch: ten claims, then ten outcomes (inserted and queued untimed)
        new = [NewTask(new_id(), "app.task1", "lambda", '{"n": 1}') for _ in range(10)]
        store.insert(new)
        store.mark_queued([t.id for t in new])
        tokens = [(t.id, t.task, f"bench#{t.id.hex[:8]}") for t in new]
        timings["claim a batch of 10 ms"] = _ms(
            lambda: [store.claim(Claim(i, name, token), 900) for i, name, token in tokens]
        )
        timings["outcomes of 10 ms"] = _ms(
            lambda: [store.settle(i, token, '{"ok": true}') for i, _, token in tokens]
        )
        timings["read one task ms"] = _ms(lambda: store.get(next(picks)))
        timings["reconciler scan ms"] = _ms(
            lambda: store.claim_stale(60, 900, quiet_lanes=("lambda", "celery"))
        )
        timings["due-task scan ms"] = _ms(lambda: store.claim_due(900))
        timings["list first page ms"] = _ms(lambda: store.find(TaskFilter(), 50))
        timings["list half-way page ms"] = _ms(
            lambda: store.find(TaskFilter(), 50, (middle.created_at, middle.id))
        )
        timings["list one owner's first page ms"] = _ms(
            lambda: store.find(TaskFilter(owner="owner-7"), 50)
        )
        timings["list failed, first page ms"] = _ms(
            lambda: store.find(TaskFilter(status=Status.FAILED), 50)
        )
        return timings

    return one_round


def _cluster_cpu_seconds(postmaster: int) -> float:
    """CPU seconds the Postgres server has used: the postmaster (with its children that have
    exited) and its live children (backends, writers)."""
    total = 0.0
    for pid in procfs.pids():
        fields = procfs.stat(pid)
        if fields is None:
            continue
        if pid == postmaster:
            total += procfs.cpu_seconds(fields, children=True)
        elif int(fields[procfs.PARENT]) == postmaster:
            total += procfs.cpu_seconds(fields)
    return total


def _postgres_cpu_per_task(engine: Any, tasks: int = 2_000) -> dict[str, float]:
    """Postgres' own CPU for the life of ``tasks`` tasks as the lambda lane lives it: submitted
    100 to a statement, queued, then each claimed and its outcome written (one statement each,
    as the consumer chains an outcome with the next claim)."""
    with engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    postmaster = procfs.parent(backend)
    store = TaskStore(engine)
    before = _cluster_cpu_seconds(postmaster)
    statements = 0
    for _ in range(tasks // 100):
        new = [NewTask(new_id(), "app.task1", "lambda", '{"n": 1}') for _ in range(100)]
        store.insert(new)
        store.mark_queued([t.id for t in new])
        statements += 2
        for t in new:
            token = f"cpu#{t.id.hex[:8]}"
            store.claim(Claim(t.id, t.task, token), 900)
            store.settle(t.id, token, '{"ok": true}')
            statements += 2
    used = _cluster_cpu_seconds(postmaster) - before
    return {
        "Postgres CPU ms per task": used * 1000 / tasks,
        "statements per task (this measure)": statements / tasks,
    }


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
    engines = {rows: _database(bench, rows) for rows in sizes}
    try:
        rounds = {rows: _operations(engine, rows, reps) for rows, engine in engines.items()}
        samples: dict[int, dict[str, list[float]]] = {rows: {} for rows in sizes}
        for rep in range(reps + 1):  # the tables take turns: a slow spell hits them alike
            for rows in sizes:
                timings = rounds[rows]()
                if rep:  # the first round warms the caches
                    for name, ms in timings.items():
                        samples[rows].setdefault(name, []).append(ms)
        per_size = {
            rows: {name: median(values) for name, values in by_name.items()}
            for rows, by_name in samples.items()
        }
        largest_engine = engines[sizes[-1]]
        sizes_report = _sizes_of(largest_engine, sizes[-1]) | _postgres_cpu_per_task(
            largest_engine, bench.n(2_000, 200)
        )
    finally:
        for engine in engines.values():
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
