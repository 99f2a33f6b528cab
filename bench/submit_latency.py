"""2. Single submission: p50/p99 latency of one POST /tasks through the handler vs one raw
SendMessage of the same message."""

from __future__ import annotations

from bench.common import celery_body, post
from bench.env import BenchEnv, percentile, timed


def run(bench: BenchEnv) -> dict:
    n = bench.n(300, 10)
    bench.reset_queues()
    post("/tasks", {"task": "bench.noop", "payload": 0})  # warm: the handler's cold start aside
    api = [
        timed(lambda: post("/tasks", {"task": "bench.noop", "payload": {"i": 1}})) for _ in range(n)
    ]
    bench.reset_queues()
    url = bench.urls["LambdaQueue"]
    raw = [
        timed(
            lambda: bench.sqs.send_message(
                QueueUrl=url, MessageBody=celery_body("bench.noop", "bench-lambda")
            )
        )
        for _ in range(n)
    ]
    figures = {
        "POST /tasks p50 ms": percentile(api, 50) * 1000,
        "POST /tasks p99 ms": percentile(api, 99) * 1000,
        "raw SendMessage p50 ms": percentile(raw, 50) * 1000,
        "raw SendMessage p99 ms": percentile(raw, 99) * 1000,
    }
    figures["p50 ratio"] = figures["POST /tasks p50 ms"] / figures["raw SendMessage p50 ms"]
    return {
        "name": "single submission",
        "workload": f"{n} sequential requests, warm handler",
        "figures": figures,
        "targets": {},
    }
