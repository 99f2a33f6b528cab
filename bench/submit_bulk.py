"""1. Bulk submission: tasks/s through the producer's batch path vs raw SendMessageBatch of the
same Celery messages (the floor) vs a Celery apply_async loop (what users do today)."""

from __future__ import annotations

import time

from bench.common import celery_body, post
from bench.env import BenchEnv


def run(bench: BenchEnv) -> dict:
    n = bench.n(3000, 40)
    per_request = 100

    bench.reset_queues()
    start = time.perf_counter()
    for offset in range(0, n, per_request):
        count = min(per_request, n - offset)
        response = post(
            "/tasks/batch",
            {"tasks": [{"task": "bench.noop", "payload": {"i": i}} for i in range(count)]},
        )
        assert response["statusCode"] == 202, response
    tasklane = n / (time.perf_counter() - start)

    bench.reset_queues()
    url = bench.urls["LambdaQueue"]
    bodies = [celery_body("bench.noop", "bench-lambda") for _ in range(n)]
    start = time.perf_counter()
    for offset in range(0, n, 10):
        entries = [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[offset : offset + 10])
        ]
        bench.sqs.send_message_batch(QueueUrl=url, Entries=entries)
    raw = n / (time.perf_counter() - start)

    bench.reset_queues()
    from celery import Celery

    app = Celery("plain", broker="sqs://", set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "region": "us-east-1",
            "predefined_queues": {"bench-lambda": {"url": url}},
        },
        task_serializer="json",
    )
    loop_n = max(10, n // 5)  # the loop is slow; fewer tasks give the same rate
    with app.producer_or_acquire() as producer:
        start = time.perf_counter()
        for i in range(loop_n):
            app.send_task("bench.noop", args=[str(i)], queue="bench-lambda", producer=producer)
        celery = loop_n / (time.perf_counter() - start)

    return {
        "name": "bulk submission",
        "workload": f"{n} tasks, batches of {per_request}, producer handler in-process",
        "figures": {
            "tasklane tasks/s": tasklane,
            "raw SendMessageBatch tasks/s": raw,
            "celery apply_async loop tasks/s": celery,
            "vs raw": tasklane / raw,
            "vs celery loop": tasklane / celery,
        },
        "targets": {"vs raw": (">=", 0.8), "vs celery loop": (">=", 3.0)},
    }
