"""3. Consumer: SQL statements per SQS batch of 1, 10 and 100 records (counted with a SQLAlchemy
event hook), and tasks/s of the consumer handler on batches of 10."""

from __future__ import annotations

import time

from bench.common import consume, count_statements, post, receive_all
from bench.env import BenchEnv


def _submit(n: int) -> None:
    for offset in range(0, n, 100):
        count = min(100, n - offset)
        post(
            "/tasks/batch", {"tasks": [{"task": "bench.noop", "payload": i} for i in range(count)]}
        )


def run(bench: BenchEnv) -> dict:
    figures: dict[str, float] = {}
    targets: dict[str, tuple[str, float]] = {}
    for size in (1, 10, 100):
        bench.reset_queues()
        _submit(size)
        messages = receive_all(bench.sqs, bench.urls["LambdaQueue"], size)
        with count_statements() as statements:
            response = consume(messages, bench.urls["LambdaQueue"])
        assert response == {"batchItemFailures": []}, response
        figures[f"statements per batch of {size}"] = len(statements)
        targets[f"statements per batch of {size}"] = ("<=", size + 2)

    n = bench.n(1000, 30)
    bench.reset_queues()
    _submit(n)
    elapsed = 0.0
    done = 0
    while done < n:
        messages = receive_all(bench.sqs, bench.urls["LambdaQueue"], 10)
        if not messages:
            break
        start = time.perf_counter()
        consume(messages, bench.urls["LambdaQueue"])
        elapsed += time.perf_counter() - start
        done += len(messages)
    figures["consumer tasks/s (batches of 10)"] = done / elapsed
    figures["handler ms per task (batches of 10)"] = elapsed / done * 1000
    return {
        "name": "consumer round trips",
        "workload": f"trivial task; {n} tasks for the rate (handler time only)",
        "figures": figures,
        "targets": targets,
    }
