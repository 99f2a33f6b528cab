"""5. Celery lane: tasks/s of a trivial tasklane task vs the same trivial plain Celery task, on
the same broker and worker settings (one worker, prefork x2, prefetch 1, acks late).

Both sides get their messages sent in batches while the worker is running; the rate is the
number of tasks over the time until the queue is empty (acks-late deletes come last)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tasklane import broker, service
from tasklane.config import settings
from tasklane.store import default_store

from bench.common import celery_body
from bench.env import BenchEnv, median

DRAIN_TIMEOUT_S = 300


def _drain_rate(bench: BenchEnv, app: str, n: int, bodies: Callable[[int], list[str]]) -> float:
    from tests.processes import Worker

    bench.reset_queues()
    url = bench.urls["CeleryQueue"]
    messages = bodies(n)
    worker = Worker(bench.env, "bench-celery", "--concurrency", "2", app=app).wait_ready()
    try:
        start = time.perf_counter()
        for offset in range(0, n, 10):
            entries = [
                {"Id": str(i), "MessageBody": b}
                for i, b in enumerate(messages[offset : offset + 10])
            ]
            bench.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            attrs = bench.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
            if sum(int(v) for v in attrs["Attributes"].values()) == 0:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(
                f"{app}: queue not drained in {DRAIN_TIMEOUT_S} s\n" + "\n".join(worker.lines[-30:])
            )
        dead = bench.sqs.get_queue_attributes(
            QueueUrl=bench.urls["CeleryDeadLetterQueue"], AttributeNames=names[:1]
        )
        assert dead["Attributes"][names[0]] == "0", f"{app}: tasks dead-lettered"
        return n / (time.perf_counter() - start)
    finally:
        worker.stop()


def _tasklane_messages(count: int) -> list[str]:
    """Rows first (what the producer inserts), then the same messages the producer sends."""
    store = default_store()
    ids = []
    for offset in range(0, count, 100):
        batch = {
            "tasks": [
                {"task": "bench.noop_celery", "payload": i} for i in range(min(100, count - offset))
            ]
        }
        subs = service.parse_batch(batch, settings())
        ids += [r.id for r in store.insert([service.new_task(s) for s in subs])]
    return [broker.message_body("bench.noop_celery", i, "bench-celery") for i in ids]


def run(bench: BenchEnv) -> dict:
    n = bench.n(400, 20)
    rounds = bench.n(2, 1)

    def plain_messages(count: int) -> list[str]:
        return [celery_body("bench.noop_celery", "bench-celery") for _ in range(count)]

    # Alternate the two sides and take each one's median: single runs of a worker vary a lot.
    tasklane_rates, plain_rates = [], []
    for _ in range(rounds):
        tasklane_rates.append(_drain_rate(bench, "tasklane.worker", n, _tasklane_messages))
        plain_rates.append(_drain_rate(bench, "bench.plain_celery", n, plain_messages))
    tasklane, plain = median(tasklane_rates), median(plain_rates)
    return {
        "name": "celery lane throughput",
        "workload": f"{n} trivial tasks x {rounds} alternating runs (median), 1 worker, "
        "prefork x2, prefetch 1, acks late",
        "figures": {
            "tasklane tasks/s": tasklane,
            "plain celery tasks/s": plain,
            "vs plain": tasklane / plain,
        },
        "targets": {"vs plain": (">=", 0.7)},
    }
