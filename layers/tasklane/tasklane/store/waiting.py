"""Tasks that wait: deferred to an eta, expired before they ran, met by a consumer that does
not know them, cancelled before or while they run.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import (
    DateTime,
    Interval,
    case,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from tasklane.errors import InvalidTransition, TaskNotFound
from tasklane.lifecycle import CLAIMABLE, Status
from tasklane.store.base import StoreBase
from tasklane.store.records import TaskRecord
from tasklane.store.sql import PUBLIC, cancelled_unrun, unavailable_as_error
from tasklane.store.tables import tasks


class Waiting(StoreBase):
    """Moves of a task that is not running: deferred, expired, unknown here, cancelled."""

    def defer(
        self,
        task_id: uuid.UUID,
        task: str,
        run_at: datetime,
        near_seconds: float,
        expires_at: datetime | None = None,
    ) -> TaskRecord | None:
        """A task not to run before ``run_at``: ``pending`` (its delayed message is sent now)
        when that is within ``near_seconds``, else ``scheduled`` for :meth:`claim_due`. Only a
        task waiting for its run (``pending``/``queued``) is deferred; None otherwise.
        ``expires_at`` (the deferred message's ``expires``) is kept: no claim takes the task
        after it."""
        near = literal(run_at) <= func.now() + literal(timedelta(seconds=near_seconds), Interval)
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.task == task,
                tasks.c.status.in_([s.value for s in CLAIMABLE]),
            )
            .values(
                status=case((near, Status.PENDING.value), else_=Status.SCHEDULED.value),
                run_at=run_at,
                expires_at=func.coalesce(
                    literal(expires_at, DateTime(timezone=True)), tasks.c.expires_at
                ),
                updated_at=func.now(),
            )
            .returning(*PUBLIC)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return TaskRecord.from_row(row) if row else None

    def fail_waiting(self, task_id: uuid.UUID, task: str, error: dict) -> bool:
        """A task waiting to run whose message cannot run as it asks (an ``eta`` no calendar
        holds): ``failed``, with ``error``; never sent again without what it asked. A task
        running or finished is left as it is."""
        return self._end_waiting(task_id, task, Status.FAILED, error)

    def expire(self, task_id: uuid.UUID, task: str, expired_at: datetime) -> bool:
        """A task whose message expired before it ran: ``cancelled`` (``TaskExpired``), never
        run, as Celery revokes it. A task already running or finished is left as it is."""
        error = {"type": "TaskExpired", "message": f"expired at {expired_at.isoformat()}"}
        return self._end_waiting(task_id, task, Status.CANCELLED, error)

    def _end_waiting(self, task_id: uuid.UUID, task: str, status: Status, error: dict) -> bool:
        """End task ``task_id`` (of task ``task``) as ``status`` with ``error`` if it is still
        waiting to run (``pending``, ``queued`` or ``scheduled``)."""
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.task == task,
                tasks.c.status.in_([s.value for s in (*CLAIMABLE, Status.SCHEDULED)]),
            )
            .values(
                status=status.value,
                error=literal(error, JSONB),
                finished_at=func.now(),
                updated_at=func.now(),
            )
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def cancel(self, task_id: uuid.UUID) -> TaskRecord:
        """Cancel a task: one waiting to run (``pending``, ``scheduled``, ``queued``) is
        ``cancelled`` now, and its message is acknowledged without running when it comes; a
        ``running`` one is asked to stop (it ends ``cancelled`` when it does). A finished task
        is :class:`InvalidTransition`; none, :class:`TaskNotFound`."""
        waiting = [
            s.value for s in (Status.WAITING, Status.PENDING, Status.SCHEDULED, Status.QUEUED)
        ]
        cancelled = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status.in_(waiting))
            .values(**cancelled_unrun("cancelled before it ran"))
            .returning(*PUBLIC)
        )
        asked = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == Status.RUNNING.value)
            .values(cancel_requested_at=func.coalesce(tasks.c.cancel_requested_at, func.now()))
            .returning(*PUBLIC)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            member = conn.execute(
                select(tasks.c.workflow_id).where(
                    tasks.c.id == task_id, tasks.c.status.in_([*waiting, Status.RUNNING.value])
                )
            ).scalar_one_or_none()
            if member is not None:  # a step: its workflow cannot go on without it, all at once
                self._cancel_members(conn, member)
                row = conn.execute(select(*PUBLIC).where(tasks.c.id == task_id)).first()
            else:
                row = conn.execute(cancelled).first() or conn.execute(asked).first()
            if row is None:
                current = conn.execute(
                    select(tasks.c.status).where(tasks.c.id == task_id)
                ).scalar_one_or_none()
                if current is None:
                    raise TaskNotFound(f"no task with id {task_id}")
                raise InvalidTransition(f"task {task_id} is {current}: it cannot be cancelled")
        return TaskRecord.from_row(row)

    def unknown_here(self, task_id: uuid.UUID, task: str, patience_seconds: float) -> Status | None:
        """A consumer that does not know task ``task`` met it, waiting to run. Notes since when
        that has been so (and touches the row, so the reconciler sees a delivery, not a lost
        message); once it has been so for ``patience_seconds``, ends it ``failed``: no consumer
        has its code (a deploy rolled back), and a retry after one does will run it. Returns
        the status written (None: the task was not waiting to run)."""
        waiting = [Status.PENDING.value, Status.QUEUED.value]
        over = tasks.c.unknown_since < func.now() - literal(
            timedelta(seconds=patience_seconds), Interval
        )
        error = {
            "type": "UnknownTask",
            "message": f"no consumer knew task {task!r} for {patience_seconds:.0f} s",
        }
        stmt = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.task == task, tasks.c.status.in_(waiting))
            .values(
                unknown_since=func.coalesce(tasks.c.unknown_since, func.now()),
                status=case((over, Status.FAILED.value), else_=tasks.c.status),
                error=case((over, literal(error, JSONB)), else_=tasks.c.error),
                finished_at=case((over, func.now()), else_=None),
                updated_at=func.now(),
            )
            .returning(tasks.c.status)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            status = conn.execute(stmt).scalar_one_or_none()
        return Status(status) if status else None
