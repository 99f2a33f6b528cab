"""Maintenance: retries of failed tasks, the stale rescue (tasks whose message or consumer was
lost), and the retention prune, each in bounded batches under ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Interval,
    Table,
    and_,
    any_,
    delete,
    false,
    func,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from tasklane.errors import InvalidTransition, TaskNotFound
from tasklane.lanes import HIGH_PRIORITY
from tasklane.lifecycle import MAX_BACKOFF_S, TERMINAL, Status
from tasklane.store.base import StoreBase
from tasklane.store.records import TaskFilter, TaskRecord
from tasklane.store.sql import (
    FRESH_LIFE,
    PUBLIC,
    RERUNNABLE,
    STOPPED,
    lost_attempt,
    status_is,
    taken,
    unavailable_as_error,
)
from tasklane.store.tables import idempotency_keys, rate_buckets, tasks, workflows


class Maintenance(StoreBase):
    """Retry, stale rescue and prune."""

    def requeue_failed(self, task_id: uuid.UUID) -> TaskRecord:
        """``failed → pending``, a new life, now: attempts and dead letters count from zero, no
        delivery holds it, and no ``run_at`` holds it back; the caller sends the message."""
        stmt = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == Status.FAILED.value, RERUNNABLE)
            .values(**FRESH_LIFE)
            .returning(*PUBLIC)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                current = conn.execute(
                    select(tasks.c.status, tasks.c.error).where(tasks.c.id == task_id)
                ).first()
                if current is None:
                    raise TaskNotFound(f"no task with id {task_id}")
                if current.status == Status.FAILED.value:
                    raise InvalidTransition(
                        f"task {task_id} failed before it ran, and would again: "
                        f"{(current.error or {}).get('message')}"
                    )
                raise InvalidTransition(
                    f"task {task_id} is {current.status}, only failed tasks retry"
                )
        return TaskRecord.from_row(row)

    def requeue_failed_matching(
        self, where: TaskFilter, limit: int
    ) -> tuple[list[TaskRecord], bool]:
        """:meth:`requeue_failed` for up to ``limit`` failed tasks matching ``where`` (newest
        first), in one statement; and whether more remain. ``SKIP LOCKED``: two bulk retries
        side by side take different tasks."""
        failed = replace(where, status=Status.FAILED)
        # a task someone asked to stop is not taken by a bulk retry, whatever it ended as
        chosen = (
            select(tasks.c.id)
            .where(*failed.conditions(), RERUNNABLE, tasks.c.cancel_requested_at.is_(None))
            .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        chosen = taken(chosen)
        stmt = (
            update(tasks)
            .where(tasks.c.id == chosen.c.id, tasks.c.status == Status.FAILED.value)
            .values(**FRESH_LIFE)
            .returning(*PUBLIC)
        )
        more = (
            select(tasks.c.id)
            .where(*failed.conditions(), RERUNNABLE, tasks.c.cancel_requested_at.is_(None))
            .limit(1)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            records = [TaskRecord.from_row(r) for r in conn.execute(stmt)]
            remaining = conn.execute(more).first() is not None
        return records, remaining

    def prune(
        self,
        finished_before: datetime,
        payloads_before: datetime,
        batch: int = 1000,
        dry_run: bool = False,
    ) -> dict[str, int]:
        """Delete finished tasks (succeeded, failed, cancelled) that finished before
        ``finished_before``, and drop the payloads of succeeded tasks that finished before
        ``payloads_before`` (their results stay). A task still waiting, queued or running is
        never touched, nor a workflow any of whose tasks is: a workflow goes once all its tasks
        have finished before the cut, with them; nor a unique task within its ``unique_for``.
        In batches of ``batch``, each its own short transaction (``SKIP LOCKED``: consumers
        and other prunes are never waited for).
        ``dry_run``: count only. Returns what was (or would be) removed."""
        terminal = [s.value for s in TERMINAL]
        old = and_(
            tasks.c.status.in_(terminal),
            tasks.c.finished_at < finished_before,
            # a unique task's window holds its key: it stays until the window is over
            or_(tasks.c.unique_until.is_(None), tasks.c.unique_until <= func.now()),
        )
        unfinished = (
            select(literal(1))
            .select_from(tasks)
            .where(tasks.c.id == any_(workflows.c.members), tasks.c.status.not_in(terminal))
            .exists()
        )
        late = (
            select(literal(1))
            .select_from(tasks)
            .where(tasks.c.id == any_(workflows.c.members), tasks.c.finished_at >= finished_before)
            .exists()
        )
        done_workflows = select(workflows.c.id).where(
            workflows.c.created_at < finished_before, ~unfinished, ~late
        )
        free = or_(
            tasks.c.workflow_id.is_(None),
            ~select(workflows.c.id).where(workflows.c.id == tasks.c.workflow_id).exists(),
        )
        heavy = and_(
            tasks.c.status == Status.SUCCEEDED.value,
            tasks.c.finished_at < payloads_before,
            tasks.c.payload.is_not(None),
        )
        counts = {"workflows": 0, "tasks": 0, "payloads": 0}
        with unavailable_as_error():
            if dry_run:
                with self.engine.connect() as conn:
                    counts["workflows"] = conn.execute(
                        select(func.count()).select_from(done_workflows.subquery())
                    ).scalar_one()
                    counts["tasks"] = conn.execute(
                        select(func.count()).where(
                            old, or_(free, tasks.c.workflow_id.in_(done_workflows))
                        )
                    ).scalar_one()
                    counts["payloads"] = conn.execute(
                        select(func.count()).where(heavy, ~old)
                    ).scalar_one()
                return counts
            for key, stmt in (
                ("workflows", self._batch_delete(workflows, done_workflows, batch)),
                ("tasks", self._batch_delete(tasks, select(tasks.c.id).where(old, free), batch)),
            ):
                while True:
                    with self.engine.begin() as conn:
                        removed = conn.execute(stmt).rowcount
                    counts[key] += removed
                    if removed < batch:
                        break
            with self.engine.begin() as conn:  # a key outlives no task it could replay
                conn.execute(
                    delete(idempotency_keys).where(idempotency_keys.c.created_at < finished_before)
                )
                # a rate limit's bucket whose next moment is long past holds nothing: a new
                # claim starts it again as it was
                conn.execute(delete(rate_buckets).where(rate_buckets.c.next_free < finished_before))
            chosen = taken(
                select(tasks.c.id).where(heavy).limit(batch).with_for_update(skip_locked=True)
            )
            drop = update(tasks).where(tasks.c.id == chosen.c.id).values(payload=null())
            while True:
                with self.engine.begin() as conn:
                    dropped = conn.execute(drop).rowcount
                counts["payloads"] += dropped
                if dropped < batch:
                    break
        return counts

    @staticmethod
    def _batch_delete(table: Table, ids: Any, batch: int) -> Any:
        chosen = taken(ids.limit(batch).with_for_update(skip_locked=True))
        return delete(table).where(table.c.id == chosen.c.id)

    def claim_stale(
        self,
        grace_seconds: float,
        stranded_seconds: float,
        quiet_lanes: Sequence[str | tuple[str, bool]] = (),
        limit: int = 100,
    ) -> list[TaskRecord]:
        """Tasks whose message may be missing, taken so no other reconciler sends them.

        - ``pending`` past the grace period: the send failed, or the producer died after the
          commit;
        - ``running`` with a lease expired past the grace period, in a lane whose queue shows
          no waiting message: the consumer died, and its message may be gone too (in a busy
          lane it may be waiting its turn: a copy each grace period would pile up); in a busy
          lane once its lease expired as long ago as a stranded ``queued`` task's last write
          (a lane that is never quiet must not keep it for ever);
        - ``queued`` with nothing written for ``stranded_seconds`` beyond the longest retry
          back-off, in a lane whose queue shows no waiting message, and not due later: its
          message was acknowledged while the task was not done. A task waiting out a back-off
          still has its message (hidden), and a busy lane's queued tasks may simply be waiting
          their turn; sending those again would give them a second carrier.

        ``quiet_lanes``: a lane's name (every priority), or ``(lane, high)`` for one of its two
        queues (:func:`tasklane.reconciler.quiet_lanes`).

        ``FOR UPDATE SKIP LOCKED`` lets reconcilers run side by side; touching ``updated_at``
        keeps the next run from resending before another grace period has passed.
        """
        quiet = _in_quiet_queues(quiet_lanes)
        grace = func.now() - literal(timedelta(seconds=grace_seconds), Interval)
        stranded = func.now() - literal(
            timedelta(seconds=stranded_seconds + MAX_BACKOFF_S), Interval
        )
        stale = (
            select(tasks.c.id)
            .where(
                or_(
                    and_(status_is(Status.PENDING), tasks.c.updated_at < grace),
                    and_(
                        status_is(Status.RUNNING),
                        tasks.c.lease_until < grace,
                        or_(quiet, tasks.c.lease_until < stranded),
                    ),
                    and_(
                        status_is(Status.QUEUED),
                        tasks.c.updated_at < stranded,
                        quiet,
                        or_(tasks.c.run_at.is_(None), tasks.c.run_at < grace),
                    ),
                ),
                tasks.c.updated_at < grace,
            )
            .order_by(tasks.c.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stale = taken(stale)
        stmt = (
            update(tasks)
            .where(tasks.c.id == stale.c.id)
            .values(updated_at=func.now())
            .returning(*PUBLIC)
        )
        # a run asked to stop whose consumer died is over: cancelled, never sent again
        ended = (
            update(tasks)
            .where(
                status_is(Status.RUNNING),
                tasks.c.cancel_requested_at.is_not(None),
                tasks.c.lease_until < grace,
            )
            .values(
                status=Status.CANCELLED.value,
                error=func.coalesce(tasks.c.error, literal(STOPPED, JSONB)),
                lease_until=None,
                finished_at=func.now(),
                history=lost_attempt(),
                updated_at=func.now(),
            )
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            conn.execute(ended)
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]


def _in_quiet_queues(quiet: Sequence[str | tuple[str, bool]]) -> Any:
    """Whether a task's queue is one of ``quiet``: its lane, and for ``(lane, high)`` its
    priority's side of :data:`tasklane.lanes.HIGH_PRIORITY`."""
    priority = func.coalesce(tasks.c.priority, 0)
    conditions = [
        tasks.c.lane == q
        if isinstance(q, str)
        else and_(
            tasks.c.lane == q[0], priority >= HIGH_PRIORITY if q[1] else priority < HIGH_PRIORITY
        )
        for q in quiet
    ]
    return or_(false(), *conditions)
