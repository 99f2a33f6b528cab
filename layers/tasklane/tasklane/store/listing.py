"""Listing: a task by id, pages of tasks newest first (keyset, summaries only: never a
result), and the operator's figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Interval,
    Text,
    any_,
    func,
    literal,
    literal_column,
    select,
    tuple_,
)

from tasklane.errors import TaskNotFound
from tasklane.lifecycle import Status
from tasklane.store.base import StoreBase
from tasklane.store.records import TaskFilter, TaskRecord
from tasklane.store.sql import (
    IDS,
    LISTED,
    PUBLIC,
    TERMINAL_NAMES,
    WITH_HISTORY,
    unavailable_as_error,
)
from tasklane.store.tables import tasks


def find_statement(
    where: TaskFilter, limit: int, after: tuple[datetime, uuid.UUID] | None = None
) -> Any:
    """The query of :meth:`TaskStore.find` (the tests read its plan): summaries, without
    results or tracebacks (a page of 500 tasks must fit in a response whatever they hold)."""
    stmt = (
        select(*LISTED)
        .where(*where.conditions())
        .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(tuple_(tasks.c.created_at, tasks.c.id) < tuple_(*after))
    return stmt


class Listing(StoreBase):
    """Reads of tasks: by id, by filter, and the figures by status and lane."""

    def get_many(self, ids: Sequence[uuid.UUID]) -> list[TaskRecord]:
        """The tasks of these ids that exist, in the order given."""
        stmt = select(*PUBLIC).where(tasks.c.id == any_(IDS))
        with unavailable_as_error(), self._single() as conn:
            found = {r.id: TaskRecord.from_row(r) for r in conn.execute(stmt, {"ids": list(ids)})}
        return [found[i] for i in ids if i in found]

    def get(self, task_id: uuid.UUID) -> TaskRecord:
        with unavailable_as_error(), self._single() as conn:
            row = conn.execute(select(*WITH_HISTORY).where(tasks.c.id == task_id)).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return TaskRecord.from_row(row)

    def payload(self, task_id: uuid.UUID, limit: int) -> tuple[str | None, int]:
        """A task's input as JSON text, its first ``limit`` characters only (a payload may be
        megabytes), and its whole length in characters: (None, 0) once pruned."""
        as_text = tasks.c.payload.cast(Text)
        stmt = select(func.left(as_text, limit), func.coalesce(func.length(as_text), 0)).where(
            tasks.c.id == task_id
        )
        with unavailable_as_error(), self._single() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return row[0], row[1]

    def find(
        self, where: TaskFilter, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[TaskRecord]:
        """Tasks matching ``where``, newest first (``created_at``, then ``id``), at most
        ``limit``, from just after ``after`` (the last one of the page before): keyset pages,
        each an index range scan, stable while new tasks arrive (they come before page one)."""
        with unavailable_as_error(), self.engine.connect() as conn:
            return [
                TaskRecord.from_row(r) for r in conn.execute(find_statement(where, limit, after))
            ]

    def by_task(self, window: timedelta, owner: str | None = None) -> list[dict[str, Any]]:
        """Per task name: how many of its tasks created within ``window`` are in each status,
        and, of those that finished within it, the last attempt's runtime (p50, p95, in
        seconds) and the share that failed. Of ``owner``'s tasks, or of all (None)."""
        mine = [] if owner is None else [tasks.c.owner == owner]
        since = func.now() - literal(window, Interval)
        counts = (
            select(tasks.c.task, tasks.c.status, func.count())
            .where(tasks.c.created_at > since, *mine)
            .group_by(tasks.c.task, tasks.c.status)
        )
        ran = func.extract(
            "epoch",
            tasks.c.finished_at - func.coalesce(tasks.c.attempt_started_at, tasks.c.started_at),
        )
        ended = [Status.SUCCEEDED.value, Status.FAILED.value]
        runtimes = (
            select(
                tasks.c.task,
                func.percentile_cont(0.5).within_group(ran),
                func.percentile_cont(0.95).within_group(ran),
                func.count().filter(tasks.c.status == Status.FAILED.value),
                func.count(),
            )
            .where(tasks.c.finished_at > since, tasks.c.status.in_(ended), *mine)
            .group_by(tasks.c.task)
        )
        found: dict[str, dict[str, Any]] = {}

        def of(name: str) -> dict[str, Any]:
            return found.setdefault(
                name,
                {"task": name, "counts": {}, "finished": 0, "failed": 0, "p50": None, "p95": None},
            )

        with unavailable_as_error(), self.engine.connect() as conn:
            for name, status, count in conn.execute(counts):
                of(name)["counts"][status] = count
            for name, p50, p95, failed, finished in conn.execute(runtimes):
                of(name).update(
                    p50=None if p50 is None else float(p50),
                    p95=None if p95 is None else float(p95),
                    failed=failed,
                    finished=finished,
                )
        return sorted(found.values(), key=lambda t: (-sum(t["counts"].values()), t["task"]))

    def stats(self, owner: str | None = None) -> dict[str, Any]:
        """Counts by status and lane, how long the oldest deliverable queued task has waited
        per lane (seconds: since it was created, or due, or due to be retried), and
        tasks finished per minute over the last 15 minutes (oldest minute first): of
        ``owner``'s tasks, or of all (None)."""
        mine = [] if owner is None else [tasks.c.owner == owner]
        counts = (
            select(tasks.c.status, tasks.c.lane, func.count())
            .where(*mine)
            .group_by(tasks.c.status, tasks.c.lane)
        )
        # the backlog is what could be delivered now, waiting since it could: a task waiting out
        # a countdown (run_at) or a retry's delay (retry_at) is not late
        since = func.greatest(tasks.c.created_at, tasks.c.run_at, tasks.c.retry_at)
        oldest = (
            select(tasks.c.lane, func.extract("epoch", func.now() - func.min(since)))
            .where(tasks.c.status == Status.QUEUED.value, since <= func.now(), *mine)
            .group_by(tasks.c.lane)
        )
        minute = func.date_trunc(literal_column("'minute'"), tasks.c.finished_at)
        done = (
            select(minute, tasks.c.status, func.count())
            .where(
                tasks.c.finished_at > func.now() - literal(timedelta(minutes=15), Interval),
                tasks.c.finished_at.is_not(None),
                *mine,
            )
            .group_by(minute, tasks.c.status)
        )
        with unavailable_as_error(), self.engine.connect() as conn:
            by_status: dict[str, dict[str, int]] = {}
            for status, lane, count in conn.execute(counts):
                by_status.setdefault(status, {})[lane] = count
            ages = {lane: float(age) for lane, age in conn.execute(oldest)}
            now = conn.execute(
                select(func.date_trunc(literal_column("'minute'"), func.now()))
            ).scalar_one()
            finished: dict[datetime, dict[str, int]] = {}
            for at, status, count in conn.execute(done):
                finished.setdefault(at, {})[status] = count
        minutes = [now - timedelta(minutes=m) for m in range(14, -1, -1)]
        return {
            "counts": by_status,
            "oldest_queued_seconds": ages,
            "finished_per_minute": [
                {"minute": m, **{s: finished.get(m, {}).get(s, 0) for s in TERMINAL_NAMES}}
                for m in minutes
            ],
        }
