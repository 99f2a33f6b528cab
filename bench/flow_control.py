"""Flow control's cost: what a unique key adds to a submission (POST /tasks through the
handler), in time and statements, against the same submission without one; and how fast a
duplicate is answered (it stores and sends nothing)."""

from __future__ import annotations

from bench.common import count_statements, post
from bench.env import BenchEnv, percentile, timed


def run(bench: BenchEnv) -> dict:
    n = bench.n(300, 10)
    bench.reset_queues()
    post("/tasks", {"task": "bench.noop", "payload": {"key": -1}})  # warm the handler
    plain = [
        timed(lambda i=i: post("/tasks", {"task": "bench.noop", "payload": {"key": i}}))
        for i in range(n)
    ]
    bench.reset_queues()
    unique = [
        timed(lambda i=i: post("/tasks", {"task": "bench.unique", "payload": {"key": i}}))
        for i in range(n)
    ]
    duplicate = [
        timed(lambda: post("/tasks", {"task": "bench.unique", "payload": {"key": 0}}))
        for _ in range(n)
    ]
    with count_statements() as plain_statements:
        post("/tasks", {"task": "bench.noop", "payload": {"key": n}})
    with count_statements() as unique_statements:
        post("/tasks", {"task": "bench.unique", "payload": {"key": n}})
    with count_statements() as duplicate_statements:
        post("/tasks", {"task": "bench.unique", "payload": {"key": n}})
    bench.reset_queues()
    figures = {
        "submit p50 ms, plain": percentile(plain, 50) * 1000,
        "submit p50 ms, unique key": percentile(unique, 50) * 1000,
        "duplicate answered p50 ms": percentile(duplicate, 50) * 1000,
        "statements, plain": len(plain_statements),
        "statements, unique key": len(unique_statements),
        "statements, duplicate": len(duplicate_statements),
    }
    figures["unique key cost ms"] = (
        figures["submit p50 ms, unique key"] - figures["submit p50 ms, plain"]
    )
    return {
        "name": "flow control: unique tasks",
        "workload": f"{n} sequential POST /tasks each way, warm handler",
        "figures": figures,
        "targets": {"statements, unique key": ("<=", 4)},
    }
