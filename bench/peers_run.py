"""One system's part of the peers benchmark, in a process of its own (``bench/peers.py`` runs it):
enqueue N trivial jobs, or drain its share of them, and print when the work started and ended.

    python -m bench.peers_run SYSTEM enqueue|drain|latency N DSN [PART PARTS]

- ``tasklane``: the Postgres work of a submit (one multi-row insert per 100 tasks, then the mark
  that their messages are out), and the lambda lane's consumer handler fed SQS records from
  memory in batches of 10, as Lambda delivers them (no SQS: only Postgres is compared here).
- ``procrastinate``: ``batch_defer_async`` per 100; a worker with ``wait=False`` (drains, exits).
- ``pgqueuer``: ``Queries.enqueue`` of lists per 100; ``QueueManager.run(mode=drain)``.

``latency``: a worker waits for work (tasklane's consumer for a message handed over in memory,
the peers' workers woken by their LISTEN/NOTIFY) while N jobs are enqueued one at a time, each
after the previous one started: the time from the enqueue call to the job's body, per job.

The job is a no-op everywhere. Times are ``time.monotonic()``, one clock for every process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BATCH = 100


def _report(started: float, ended: float, **extra: Any) -> None:
    print(json.dumps({"started": started, "ended": ended} | extra), flush=True)


# -- tasklane -----------------------------------------------------------------------------------
def _tasklane_store(dsn: str) -> Any:
    from tasklane.config import settings
    from tasklane.database import make_engine
    from tasklane.store import TaskStore

    os.environ["DATABASE_URL"] = dsn
    settings.cache_clear()
    return TaskStore(make_engine(settings()))


def tasklane_enqueue(n: int, dsn: str) -> None:
    from tasklane.ids import new_id
    from tasklane.store import NewTask

    store = _tasklane_store(dsn)
    started = time.monotonic()
    for offset in range(0, n, BATCH):
        new = [
            NewTask(new_id(), "bench.noop", "lambda", str(i))
            for i in range(offset, min(n, offset + BATCH))
        ]
        records = store.insert(new)
        store.mark_queued([r.id for r in records])  # SQS took them
    _report(started, time.monotonic())


def tasklane_drain(n: int, dsn: str, part: int, parts: int) -> None:
    from tasklane import broker, consumer
    from tasklane.executor import Executor
    from tasklane.local.events import LambdaContext, queue_arn, sqs_event

    store = _tasklane_store(dsn)
    # the queued tasks, as the parent read them before any part started: split the same way
    ids = json.loads(Path(os.environ["PEERS_IDS"]).read_text())
    mine = [uuid.UUID(i) for k, i in enumerate(ids) if k % parts == part]
    messages = [
        {
            "MessageId": f"m-{task_id}",
            "ReceiptHandle": f"r-{task_id}",
            "Body": broker.message_body("bench.noop", task_id, "bench-lambda"),
            "Attributes": {"ApproximateReceiveCount": "1"},
            "MD5OfBody": "",
        }
        for task_id in mine
    ]
    executor = Executor(store)
    arn = queue_arn("bench-lambda")
    started = time.monotonic()
    failed = 0
    for offset in range(0, len(messages), 10):
        event = sqs_event(messages[offset : offset + 10], arn)
        response = consumer.handle(event, LambdaContext(function_name="consumer"), executor)
        failed += len(response["batchItemFailures"])
    _report(started, time.monotonic(), failed=failed)


def tasklane_latency(n: int, dsn: str) -> None:
    """Submit's Postgres work in a producer process, the message handed over a pipe to this
    process's consumer (where SQS would deliver it), the time its body starts sent back."""
    import multiprocessing

    from tasklane import consumer, task
    from tasklane.executor import Executor
    from tasklane.local.events import LambdaContext, queue_arn, sqs_event

    forked = multiprocessing.get_context("fork")
    messages, starts = forked.Pipe(duplex=False), forked.Pipe(duplex=False)
    producer = forked.Process(target=_tasklane_produce, args=(n, dsn, messages[1], starts[0]))
    producer.start()

    @task(name="bench.peers_mark", lane="lambda")
    def mark(payload: object) -> None:
        starts[1].send(time.monotonic())

    executor = Executor(_tasklane_store(dsn))
    arn, context = queue_arn("bench-lambda"), LambdaContext(function_name="consumer")
    while (body := messages[0].recv()) is not None:
        message = {
            "MessageId": "m",
            "ReceiptHandle": "r",
            "Body": body,
            "Attributes": {"ApproximateReceiveCount": "1"},
            "MD5OfBody": "",
        }
        consumer.handle(sqs_event([message], arn), context, executor)
    latencies = messages[0].recv()
    producer.join()
    _report(0.0, 0.0, latencies=latencies)


def _tasklane_produce(n: int, dsn: str, messages: Any, starts: Any) -> None:
    from tasklane import broker
    from tasklane.ids import new_id
    from tasklane.store import NewTask

    store = _tasklane_store(dsn)
    latencies = []
    for i in range(n):
        sent = time.monotonic()
        (record,) = store.insert([NewTask(new_id(), "bench.peers_mark", "lambda", str(i))])
        messages.send(broker.message_body("bench.peers_mark", record.id, "bench-lambda"))
        store.mark_queued([record.id])
        latencies.append(starts.recv() - sent)
    messages.send(None)
    messages.send(latencies)


# -- procrastinate ------------------------------------------------------------------------------
def _procrastinate(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_libpq(dsn)))

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    return app, noop


async def _procrastinate_enqueue(n: int, dsn: str) -> None:
    app, noop = _procrastinate(dsn)
    async with app.open_async():
        started = time.monotonic()
        for offset in range(0, n, BATCH):
            await noop.batch_defer_async(*({"i": i} for i in range(offset, min(n, offset + BATCH))))
        _report(started, time.monotonic())


async def _procrastinate_drain(n: int, dsn: str) -> None:
    app, _ = _procrastinate(dsn)
    async with app.open_async():
        started = time.monotonic()
        await app.run_worker_async(
            wait=False, concurrency=1, listen_notify=False, install_signal_handlers=False
        )
        _report(started, time.monotonic())


async def _procrastinate_latency(n: int, dsn: str) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_libpq(dsn)))
    ran: dict[int, float] = {}
    body_ran = asyncio.Event()

    @app.task(name="mark")
    async def mark(i: int) -> None:
        ran[i] = time.monotonic()
        body_ran.set()

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=1, listen_notify=True, install_signal_handlers=False)
        )
        await asyncio.sleep(1)  # listening
        latencies = await _one_at_a_time(n, lambda i: mark.defer_async(i=i), ran, body_ran)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    _report(0.0, 0.0, latencies=latencies)


async def _one_at_a_time(n: int, enqueue: Any, ran: dict[int, float], body_ran: Any) -> list:
    latencies = []
    for i in range(n):
        body_ran.clear()
        sent = time.monotonic()
        await enqueue(i)
        await asyncio.wait_for(body_ran.wait(), 60)
        latencies.append(ran[i] - sent)
    return latencies


# -- PgQueuer -----------------------------------------------------------------------------------
async def _pgqueuer_enqueue(n: int, dsn: str) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(_libpq(dsn))
    queries = Queries(AsyncpgDriver(conn))
    started = time.monotonic()
    for offset in range(0, n, BATCH):
        count = min(n, offset + BATCH) - offset
        await queries.enqueue(
            ["noop"] * count, [str(offset + i).encode() for i in range(count)], [0] * count
        )
    _report(started, time.monotonic())
    await conn.close()


async def _pgqueuer_drain(n: int, dsn: str) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(_libpq(dsn))
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    @manager.entrypoint("noop")
    async def noop(job: Any) -> None:
        return None

    started = time.monotonic()
    await manager.run(mode=QueueExecutionMode.drain, batch_size=10)
    _report(started, time.monotonic())


async def _pgqueuer_latency(n: int, dsn: str) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    manager = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(_libpq(dsn)))))
    queries = Queries(AsyncpgDriver(await asyncpg.connect(_libpq(dsn))))
    ran: dict[int, float] = {}
    body_ran = asyncio.Event()

    @manager.entrypoint("mark")
    async def mark(job: Any) -> None:
        ran[int(job.payload)] = time.monotonic()
        body_ran.set()

    worker = asyncio.create_task(manager.run(batch_size=1))
    await asyncio.sleep(1)  # listening
    latencies = await _one_at_a_time(
        n, lambda i: queries.enqueue(["mark"], [str(i).encode()], [0]), ran, body_ran
    )
    manager.shutdown.set()
    await asyncio.wait_for(worker, 30)
    _report(0.0, 0.0, latencies=latencies)


def _libpq(dsn: str) -> str:
    """``postgresql+pg8000://u@h:p/db`` as libpq's ``postgresql://u@h:p/db``."""
    return "postgresql://" + dsn.split("://", 1)[1]


def setup(system: str, dsn: str) -> None:
    """The system's schema, as its own tooling installs it."""
    if system == "tasklane":
        from tasklane import migrate

        migrate.upgrade(_tasklane_store(dsn).engine)
    elif system == "procrastinate":
        import procrastinate

        app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=_libpq(dsn)))
        with app.open():
            app.schema_manager.apply_schema()
    else:

        async def install() -> None:
            import asyncpg
            from pgqueuer.db import AsyncpgDriver
            from pgqueuer.queries import Queries

            conn = await asyncpg.connect(_libpq(dsn))
            await Queries(AsyncpgDriver(conn)).install()
            await conn.close()

        asyncio.run(install())
    _report(0.0, 0.0)


PEERS = {
    "procrastinate": (_procrastinate_enqueue, _procrastinate_drain, _procrastinate_latency),
    "pgqueuer": (_pgqueuer_enqueue, _pgqueuer_drain, _pgqueuer_latency),
}


def main(argv: list[str]) -> None:
    system, action, n, dsn = argv[0], argv[1], int(argv[2]), argv[3]
    part, parts = (int(argv[4]), int(argv[5])) if len(argv) > 5 else (0, 1)
    if action == "setup":
        setup(system, dsn)
    elif system == "tasklane":
        if action == "enqueue":
            tasklane_enqueue(n, dsn)
        elif action == "latency":
            tasklane_latency(n, dsn)
        else:
            tasklane_drain(n, dsn, part, parts)
    else:
        enqueue, drain, latency = PEERS[system]
        asyncio.run({"enqueue": enqueue, "drain": drain, "latency": latency}[action](n, dsn))


if __name__ == "__main__":
    main(sys.argv[1:])
