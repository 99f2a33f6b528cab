"""9. Workflows: the fan-out of a group against ``submit_many`` of the same tasks (both one
insert and SendMessageBatch; the group also writes each task's place in the workflow), and
the delay from a chord's last member finishing to its body starting (the release happens in
the last member's outcome transaction; the body then makes one trip through SQS), with the
lambda lane's consumer handler run in-process on batches of 10."""

from __future__ import annotations

import time

from sqlalchemy import text
from tasklane import database, submit_many
from tasklane.workflows import Signature, chord, group

from bench.common import consume
from bench.env import BenchEnv, median, percentile


def _fan_out(bench: BenchEnv, n: int, rounds: int) -> tuple[float, float]:
    """Tasks/s of a group of ``n`` and of submit_many of ``n``, taking turns, fresh queues."""
    elapsed = {"group": 0.0, "submit_many": 0.0}
    for i in range(rounds + 1):  # the first round warms up, untimed
        for phase in elapsed:
            bench.reset_queues()
            start = time.perf_counter()
            if phase == "group":
                group(Signature("bench.noop", k) for k in range(n)).delay()
            else:
                submit_many([("bench.noop", k) for k in range(n)])
            if i:
                elapsed[phase] += time.perf_counter() - start
    return n * rounds / elapsed["group"], n * rounds / elapsed["submit_many"]


def _callback_delay(bench: BenchEnv, members: int) -> float:
    """Seconds from the last member's outcome to the body's claim, for one chord."""
    bench.reset_queues()
    url = bench.urls["LambdaQueue"]
    handle = chord(
        [Signature("bench.noop", k) for k in range(members)], Signature("bench.noop")
    ).delay()
    body = handle.task_ids[-1]
    while True:  # as a Lambda event source polls: a batch as soon as a message is there
        messages = bench.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        ).get("Messages", [])
        if messages:
            consume(messages, url)
        with database.engine().connect() as conn:
            done = conn.execute(
                text("SELECT status FROM tasks WHERE id = :id"), {"id": body}
            ).scalar_one()
        if done == "succeeded":
            break
    with database.engine().connect() as conn:
        return float(
            conn.execute(
                text(
                    "SELECT extract(epoch FROM b.started_at - max(m.finished_at)) FROM tasks b, "
                    "tasks m WHERE b.id = :body AND m.id = ANY(CAST(:members AS uuid[])) "
                    "GROUP BY b.started_at"
                ),
                {"body": body, "members": [str(i) for i in handle.task_ids[:-1]]},
            ).scalar_one()
        )


def run(bench: BenchEnv) -> dict:
    n = bench.n(1000, 30)
    group_rate, many_rate = _fan_out(bench, n, bench.n(3, 1))
    delays = [_callback_delay(bench, bench.n(100, 5)) for _ in range(bench.n(10, 2))]
    return {
        "name": "workflows",
        "workload": (
            f"a group of {n} trivial tasks vs submit_many of {n}, in-process; "
            f"{len(delays)} chords of {bench.n(100, 5)} members run by the consumer handler"
        ),
        "figures": {
            "group tasks/s": group_rate,
            "submit_many tasks/s": many_rate,
            "group vs submit_many": group_rate / many_rate,
            "callback delay p50 ms": median(delays) * 1000,
            "callback delay max ms": percentile(delays, 100) * 1000,
        },
        "targets": {"group vs submit_many": (">=", 0.5)},
    }
