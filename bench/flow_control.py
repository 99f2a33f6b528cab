"""Flow control's cost: what a unique key adds to a submission (POST /tasks through the
handler), in time and statements, against the same submission without one; how fast a
duplicate is answered (it stores and sends nothing); and what a concurrency or rate limit adds
to a claim (the store's claim, one task at a time, against the same claim of a task without
one; the rate high enough that no claim waits)."""

from __future__ import annotations

import uuid

from tasklane import submit_many
from tasklane.registry import get
from tasklane.store import Claim, default_store

from bench.common import count_statements, post
from bench.env import BenchEnv, percentile, timed


def claims(name: str, n: int) -> tuple[list[float], int]:
    """Claim ``n`` fresh tasks of ``name`` one by one: each claim's time, and the statements
    of one."""
    store, spec = default_store(), get(name)
    handles = submit_many([(name, {"key": i % 10}) for i in range(n + 1)])

    def claim(task_id: uuid.UUID) -> None:
        made = Claim(task_id, name, f"bench#{uuid.uuid4().hex}")
        if not spec.limited:
            store.claim(made, 60)
        else:
            store.claim_limited(made, 60, spec.concurrency, spec.rate_limit)

    times = [timed(lambda h=h: claim(h.id)) for h in handles[:n]]
    with count_statements() as statements:
        claim(handles[n].id)
    return times, len(statements)


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
    plain_claims, plain_claim_statements = claims("bench.noop", n)
    limited_claims, limited_claim_statements = claims("bench.limited", n)
    rated_claims, rated_claim_statements = claims("bench.rated", n)
    bench.reset_queues()
    figures = {
        "submit p50 ms, plain": percentile(plain, 50) * 1000,
        "submit p50 ms, unique key": percentile(unique, 50) * 1000,
        "duplicate answered p50 ms": percentile(duplicate, 50) * 1000,
        "statements, plain": len(plain_statements),
        "statements, unique key": len(unique_statements),
        "statements, duplicate": len(duplicate_statements),
        "claim p50 ms, plain": percentile(plain_claims, 50) * 1000,
        "claim p50 ms, concurrency limit": percentile(limited_claims, 50) * 1000,
        "claim statements, plain": plain_claim_statements,
        "claim statements, concurrency limit": limited_claim_statements,
        "claim p50 ms, rate limit": percentile(rated_claims, 50) * 1000,
        "claim statements, rate limit": rated_claim_statements,
    }
    figures["unique key cost ms"] = (
        figures["submit p50 ms, unique key"] - figures["submit p50 ms, plain"]
    )
    return {
        "name": "flow control: unique tasks, concurrency and rate limits",
        "workload": f"{n} sequential POST /tasks and {n} claims each way, warm handler",
        "figures": figures,
        "targets": {
            "statements, unique key": ("<=", 4),
            "claim statements, concurrency limit": ("<=", 2),
            "claim statements, rate limit": ("<=", 3),
        },
    }
