"""7. Payload size: 1 KB, 100 KB, 1 MB and 5 MB payloads end to end (submit → consumed), and the
consumer's peak Python memory (tracemalloc) as a multiple of the payload."""

from __future__ import annotations

import time
import tracemalloc

from bench.common import consume, post, receive_all
from bench.env import BenchEnv

SIZES = {"1 KB": 1_000, "100 KB": 100_000, "1 MB": 1_000_000, "5 MB": 5_000_000}


def run(bench: BenchEnv) -> dict:
    figures: dict[str, float] = {}
    sizes = {"1 KB": 1_000, "100 KB": 100_000} if bench.quick else SIZES
    for label, size in sizes.items():
        bench.reset_queues()
        data = "x" * size
        start = time.perf_counter()
        response = post("/tasks", {"task": "bench.size", "payload": {"data": data}})
        assert response["statusCode"] == 202, response["body"][:200]
        messages = receive_all(bench.sqs, bench.urls["LambdaQueue"], 1)
        tracemalloc.start()
        tracemalloc.reset_peak()
        result = consume(messages, bench.urls["LambdaQueue"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result == {"batchItemFailures": []}, result
        figures[f"{label} end to end ms"] = (time.perf_counter() - start) * 1000
        figures[f"{label} consumer peak MB"] = peak / 1e6
        figures[f"{label} peak / payload"] = peak / size
    return {
        "name": "payload size",
        "workload": "one task per size, lambda lane, in-process",
        "figures": figures,
        "targets": {f"{k} peak / payload": ("<=", 10.0) for k in sizes if k != "1 KB"},
    }
