"""1. Bulk submission: tasks/s through the producer's batch path vs raw SendMessageBatch of the
same Celery messages (the floor) vs a Celery apply_async loop (what users do today).

moto slows down as a queue fills, and SQS does not; so every phase sends the same number of
tasks in rounds of 100, and the queue is emptied between rounds, outside the timed sections.
The phases take turns round by round (so a slower minute of a shared machine falls on all of
them alike), after one untimed round each for first imports and connections."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common import celery_body, post
from bench.env import BenchEnv

ROUND = 100


def _rates(bench: BenchEnv, n: int, phases: dict[str, Callable[[int], None]]) -> dict[str, float]:
    """Tasks/s of each phase, sending ``n`` tasks in rounds, the phases taking turns."""
    elapsed = dict.fromkeys(phases, 0.0)
    for send_round in phases.values():  # warm-up, untimed
        bench.reset_queues()
        send_round(min(ROUND, n))
    for offset in range(0, n, ROUND):
        count = min(ROUND, n - offset)
        for name, send_round in phases.items():
            bench.reset_queues()  # empty queues (SQS allows one PurgeQueue a minute; moto too)
            start = time.perf_counter()
            send_round(count)
            elapsed[name] += time.perf_counter() - start
    return {name: n / seconds for name, seconds in elapsed.items()}


def run(bench: BenchEnv) -> dict:
    n = bench.n(2000, 40)
    url = lambda: bench.urls["LambdaQueue"]  # noqa: E731 (queues are recreated per phase)

    def through_tasklane(count: int) -> None:
        tasks = [{"task": "bench.noop", "payload": {"i": i}} for i in range(count)]
        response = post("/tasks/batch", {"tasks": tasks})
        assert response["statusCode"] == 202, response

    def raw_batches(count: int) -> None:
        bodies = [celery_body("bench.noop", "bench-lambda") for _ in range(count)]
        for offset in range(0, count, 10):
            entries = [
                {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[offset : offset + 10])
            ]
            bench.sqs.send_message_batch(QueueUrl=url(), Entries=entries)

    from celery import Celery

    app = Celery("plain", broker="sqs://", set_as_current=False)
    app.conf.update(task_serializer="json")

    def celery_loop(count: int) -> None:
        app.conf.broker_transport_options = {
            "region": "us-east-1",
            "predefined_queues": {"bench-lambda": {"url": url()}},
        }
        with app.producer_or_acquire() as producer:
            for i in range(count):
                app.send_task("bench.noop", args=[str(i)], queue="bench-lambda", producer=producer)

    rates = _rates(
        bench, n, {"tasklane": through_tasklane, "raw": raw_batches, "celery": celery_loop}
    )
    tasklane, raw, celery = rates["tasklane"], rates["raw"], rates["celery"]
    return {
        "name": "bulk submission",
        "workload": f"{n} tasks per phase, rounds of {ROUND}, producer handler in-process",
        "figures": {
            "tasklane tasks/s": tasklane,
            "raw SendMessageBatch tasks/s": raw,
            "celery apply_async loop tasks/s": celery,
            "vs raw": tasklane / raw,
            "vs celery loop": tasklane / celery,
        },
        "targets": {"vs raw": (">=", 0.8), "vs celery loop": (">=", 3.0)},
    }
