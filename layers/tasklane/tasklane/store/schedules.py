"""Due work and periodic schedules: the ``scheduled`` tasks now within SQS's delay limit, and
each periodic task's last tick fired.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Interval,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.lifecycle import Status
from tasklane.store.base import StoreBase
from tasklane.store.records import TaskRecord
from tasklane.store.sql import PUBLIC, status_is, taken, unavailable_as_error
from tasklane.store.tables import schedules, tasks


class Schedules(StoreBase):
    """The reconciler's claim of what is due, and each schedule's last tick."""

    def claim_due(self, horizon_seconds: float, limit: int = 100) -> list[TaskRecord]:
        """``scheduled`` tasks due within ``horizon_seconds``, now ``pending`` for the caller to
        send with the delay left. ``FOR UPDATE SKIP LOCKED``: schedulers side by side send each
        task once."""
        horizon = func.now() + literal(timedelta(seconds=horizon_seconds), Interval)
        due = (
            select(tasks.c.id)
            .where(status_is(Status.SCHEDULED), tasks.c.run_at <= horizon)
            .order_by(tasks.c.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        due = taken(due)
        stmt = (
            update(tasks)
            .where(tasks.c.id == due.c.id)
            .values(status=Status.PENDING.value, updated_at=func.now())
            .returning(*PUBLIC)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]

    def schedule_last_tick(self, name: str, expression: str, now: datetime) -> datetime:
        """The last tick fired for schedule ``name``; a new schedule starts at ``now`` (it
        does not fire for the time before it existed)."""
        stmt = (
            pg_insert(schedules)
            .values(name=name, expression=expression, last_tick=now)
            .on_conflict_do_update(
                index_elements=[schedules.c.name], set_={"expression": expression}
            )
            .returning(schedules.c.last_tick)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).scalar_one()

    def advance_schedule(self, name: str, seen: datetime, last_tick: datetime) -> bool:
        """Record ``last_tick`` as fired, if no other pass moved the schedule since ``seen``."""
        stmt = (
            update(schedules)
            .where(schedules.c.name == name, schedules.c.last_tick == seen)
            .values(last_tick=last_tick, updated_at=func.now())
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def schedules(self) -> list[Any]:
        with unavailable_as_error(), self.engine.connect() as conn:
            return list(conn.execute(select(schedules).order_by(schedules.c.name)))
