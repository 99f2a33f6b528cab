"""One system's part of the peers benchmark, in a process of its own (``bench/peers.py`` runs it):
enqueue N trivial jobs, or drain its share of them, and print when the work started and ended.

    python -m bench.peers_run SYSTEM enqueue|drain N DSN [PART PARTS]

- ``tasklane``: the Postgres work of a submit (one multi-row insert per 100 tasks, then the mark
  that their messages are out), and the lambda lane's consumer handler fed SQS records from
  memory in batches of 10, as Lambda delivers them (no SQS: only Postgres is compared here).
- ``procrastinate``: ``batch_defer_async`` per 100; a worker with ``wait=False`` (drains, exits).
- ``pgqueuer``: ``Queries.enqueue`` of lists per 100; ``QueueManager.run(mode=drain)``.

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


def main(argv: list[str]) -> None:
    system, action, n, dsn = argv[0], argv[1], int(argv[2]), argv[3]
    part, parts = (int(argv[4]), int(argv[5])) if len(argv) > 5 else (0, 1)
    if action == "setup":
        setup(system, dsn)
    elif system == "tasklane":
        if action == "enqueue":
            tasklane_enqueue(n, dsn)
        else:
            tasklane_drain(n, dsn, part, parts)
    elif system == "procrastinate":
        run = _procrastinate_enqueue if action == "enqueue" else _procrastinate_drain
        asyncio.run(run(n, dsn))
    else:
        run = _pgqueuer_enqueue if action == "enqueue" else _pgqueuer_drain
        asyncio.run(run(n, dsn))


if __name__ == "__main__":
    main(sys.argv[1:])
