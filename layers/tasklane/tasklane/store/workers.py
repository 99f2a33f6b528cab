"""Workers: each Celery worker's heartbeat (who it is, what it runs, when it last said so), and
how many tasks each lane is running now.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, case, delete, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.lanes import Lane
from tasklane.lifecycle import Status
from tasklane.store.base import StoreBase
from tasklane.store.sql import unavailable_as_error
from tasklane.store.tables import tasks, workers


class Workers(StoreBase):
    """The workers view's rows."""

    def beat(self, worker: dict[str, Any]) -> None:
        """A worker says it is alive: its row made or refreshed (``name``, ``host``, ``pid``,
        ``queues``, ``concurrency``, ``active``: the task ids it runs)."""
        row = {k: worker.get(k) for k in ("name", "host", "pid", "queues", "concurrency")}
        stmt = pg_insert(workers).values(**row, active=worker.get("active") or [])
        stmt = stmt.on_conflict_do_update(
            index_elements=[workers.c.name],
            set_={
                "host": stmt.excluded.host,
                "pid": stmt.excluded.pid,
                "queues": stmt.excluded.queues,
                "concurrency": stmt.excluded.concurrency,
                "active": stmt.excluded.active,
                "last_seen": func.now(),
                # the same name started again (a restart): its start is the new process's
                "started_at": case(
                    (workers.c.pid != stmt.excluded.pid, func.now()), else_=workers.c.started_at
                ),
            },
        )
        with unavailable_as_error(), self._single() as conn:
            conn.execute(stmt)

    def forget_worker(self, name: str) -> None:
        """A worker stopped cleanly: its row goes."""
        with unavailable_as_error(), self._single() as conn:
            conn.execute(delete(workers).where(workers.c.name == name))

    def workers(self, forget_after: timedelta) -> dict[str, Any]:
        """The workers seen within ``forget_after`` (with their age: a worker that stopped
        beating died), and each lane's running tasks now."""
        seen = func.extract("epoch", func.now() - workers.c.last_seen).label("seen_seconds_ago")
        rows = (
            select(workers, seen)
            .where(workers.c.last_seen > func.now() - literal(forget_after, Interval))
            .order_by(workers.c.name)
        )
        running = (
            select(tasks.c.lane, func.count())
            .where(tasks.c.status == Status.RUNNING.value, tasks.c.lease_until > func.now())
            .group_by(tasks.c.lane)
        )
        with unavailable_as_error(), self.engine.connect() as conn:
            found = [dict(r._mapping) for r in conn.execute(rows)]
            lanes = {lane.value: 0 for lane in Lane} | dict(conn.execute(running).all())
        return {"workers": found, "running": lanes}
