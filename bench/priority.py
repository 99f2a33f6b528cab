"""15. Priorities: how soon a high-priority task starts behind a backlog of 10,000 in its lane.

The lambda lane's queue holds 10,000 trivial tasks and its consumer (an event source in this
process, as `tasklane dev` runs it) is draining them; the lane's high-priority queue has an
event source of its own, as the template gives it. High-priority tasks (priority 9) are
submitted one at a time, a second apart, and each one's start delay is read from its row
(``started_at - created_at``), with how much of the backlog was still waiting when it
started. On moto one consumer drains a few hundred trivial tasks a second; a task of the
lane's own priority submitted last would start only after the whole backlog.
"""

from __future__ import annotations

import threading
import time

from tasklane import consumer, submit, submit_many
from tasklane.local.eventsource import queue_source

from bench.env import BenchEnv, percentile


def _started(task_id) -> tuple[float | None, float]:
    """The task's start delay (s), if it started; and the backlog still queued."""
    from sqlalchemy import text
    from tasklane import database

    with database.engine().connect() as conn:
        delay = conn.execute(
            text("SELECT extract(epoch FROM started_at - created_at) FROM tasks WHERE id = :id"),
            {"id": task_id},
        ).scalar_one()
        left = conn.execute(
            text("SELECT count(*) FROM tasks WHERE status = 'queued' AND priority IS NULL")
        ).scalar_one()
    return (None if delay is None else float(delay)), left


def run(bench: BenchEnv) -> dict:
    backlog, urgent = bench.n(10_000, 200), bench.n(10, 3)
    bench.reset_queues()
    for start in range(0, backlog, 100):
        submit_many([("bench.noop", {"n": n}) for n in range(start, min(backlog, start + 100))])
    stop = threading.Event()
    sources = [
        queue_source(bench.sqs, bench.urls["LambdaQueue"], consumer.handle),
        queue_source(bench.sqs, bench.urls["LambdaHighQueue"], consumer.handle, "consumer-high"),
    ]
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in sources]
    for thread in threads:
        thread.start()
    delays, left_behind = [], []
    try:
        for _ in range(urgent):
            handle = submit("bench.noop", {"urgent": True}, priority=9)
            deadline = time.monotonic() + 60
            delay, left = _started(handle.id)
            while delay is None and time.monotonic() < deadline:
                time.sleep(0.02)
                delay, left = _started(handle.id)
            if delay is None:
                raise RuntimeError("a high-priority task did not start within 60 s")
            delays.append(delay)
            left_behind.append(left)
            time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for source in sources:
            source.close()
    bench.reset_queues()
    return {
        "name": "priorities",
        "workload": (
            f"{backlog} trivial lambda-lane tasks queued and being drained by the lane's "
            f"consumer; {urgent} priority-9 tasks submitted a second apart, taken by the high "
            "queue's own event source (in-process, on moto)"
        ),
        "figures": {
            "high-priority start delay p50 s": percentile(delays, 50),
            "high-priority start delay max s": max(delays),
            "backlog still queued when it started (fewest)": min(left_behind),
        },
        "targets": {"high-priority start delay max s": ("<=", 3.0)},
    }
