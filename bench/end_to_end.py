"""6. End to end on the local stack (``tasklane dev``): submit → succeeded, p50/p99 for each lane,
split by stage: API (the POST), queue wait (row created → claimed), run + store (claimed →
result stored), and the total as a client sees it (POST sent → GET shows succeeded)."""

from __future__ import annotations

import time

from sqlalchemy import text
from tasklane import database

from bench.env import BenchEnv, local_stack, percentile


def run(bench: BenchEnv) -> dict:
    n = bench.n(40, 3)
    figures: dict[str, float] = {}
    with local_stack() as stack:
        for lane, task in (("lambda", "bench.noop"), ("celery", "bench.noop_celery")):
            totals, apis, waits, runs = [], [], [], []
            for i in range(n):
                start = time.perf_counter()
                created = stack.http("POST", "/tasks", {"task": task, "payload": i})
                apis.append(time.perf_counter() - start)
                while stack.http("GET", f"/tasks/{created['id']}")["status"] != "succeeded":
                    time.sleep(0.01)
                totals.append(time.perf_counter() - start)
                with database.engine().connect() as conn:
                    row = conn.execute(
                        text(
                            "SELECT extract(epoch FROM started_at - created_at) AS wait, "
                            "extract(epoch FROM finished_at - started_at) AS run FROM tasks "
                            "WHERE id = :id"
                        ),
                        {"id": created["id"]},
                    ).one()
                waits.append(float(row.wait))
                runs.append(float(row.run))
            for label, values in (
                ("total", totals),
                ("API", apis),
                ("queue wait", waits),
                ("run+store", runs),
            ):
                figures[f"{lane} {label} p50 ms"] = percentile(values, 50) * 1000
                figures[f"{lane} {label} p99 ms"] = percentile(values, 99) * 1000
    return {
        "name": "end to end (local stack)",
        "workload": f"{n} sequential tasks per lane, trivial task, polling GET every 10 ms",
        "figures": figures,
        "targets": {},
    }
