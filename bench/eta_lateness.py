"""8. Countdown and eta on the local stack (``tasklane dev``): how late a delayed task starts
(claimed, ``started_at``) after the moment it asked for (``run_at``), and that none starts early.

Short delays (≤ 15 min) ride SQS's DelaySeconds from the POST. Long ones wait in Postgres as
``scheduled``; the reconciler sends each with the delay left once it is due within 15 minutes.
An hour is too long to wait here, so the long tasks are submitted for two hours and then moved to
run 75 s from now: the stack's reconciler (every minute) has to send them in time (with
``--quick``, 3 s from now and one ``tasklane reconcile``)."""

from __future__ import annotations

import time

from sqlalchemy import text
from tasklane import database

from bench.env import BenchEnv, local_stack, percentile

LATENESS = text(
    "SELECT status, extract(epoch FROM started_at - run_at) AS late FROM tasks "
    "WHERE id = ANY(CAST(:ids AS uuid[]))"
)


def _wait(ids: list[str], timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        with database.engine().connect() as conn:
            rows = conn.execute(LATENESS, {"ids": ids}).all()
        if all(r.status == "succeeded" for r in rows):
            return [float(r.late) for r in rows]
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all ran: {sorted(r.status for r in rows)}")
        time.sleep(0.2)


def run(bench: BenchEnv) -> dict:
    n = bench.n(20, 3)
    figures: dict[str, float] = {}
    early = 0
    with local_stack() as stack:
        for lane, task in (("lambda", "bench.noop"), ("celery", "bench.noop_celery")):
            ids = [
                stack.http(
                    "POST", "/tasks", {"task": task, "payload": i, "delay_seconds": 1 + i % 10}
                )["id"]
                for i in range(n)
            ]
            late = _wait(ids, 120)
            early += sum(x < 0 for x in late)
            figures[f"{lane} short delay late p50 ms"] = percentile(late, 50) * 1000
            figures[f"{lane} short delay late p99 ms"] = percentile(late, 99) * 1000
        ids = [
            stack.http(
                "POST", "/tasks", {"task": "bench.noop", "payload": i, "delay_seconds": 7200}
            )["id"]
            for i in range(n)
        ]
        lead = 3 if bench.quick else 75
        with database.engine().begin() as conn:
            conn.execute(
                text(
                    "UPDATE tasks SET run_at = now() + make_interval(secs => :lead) "
                    "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'scheduled'"
                ),
                {"ids": ids, "lead": lead},
            )
        if bench.quick:
            stack.cli("reconcile")
        late = _wait(ids, lead + 120)
        early += sum(x < 0 for x in late)
        figures["lambda long delay late p50 ms"] = percentile(late, 50) * 1000
        figures["lambda long delay late p99 ms"] = percentile(late, 99) * 1000
    figures["started early"] = early
    return {
        "name": "countdown and eta (local stack)",
        "workload": (
            f"{n} tasks per lane delayed 1-10 s; {n} lambda-lane tasks scheduled for 2 h, "
            f"then due {lead} s later (sent by the reconciler)"
        ),
        "figures": figures,
        "targets": {"started early": ("<=", 0)},
    }
