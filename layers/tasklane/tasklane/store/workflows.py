"""Workflows in the store: a chain, group or chord written whole in one transaction, and each
step released (its input bound from its predecessors' results) in the transaction that
settles the last of them, so a chord's body is released exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from tasklane.errors import InvalidRequest, TaskNotFound
from tasklane.lifecycle import Status
from tasklane.store.base import StoreBase
from tasklane.store.records import NewTask, TaskRecord
from tasklane.store.sql import (
    IDS,
    INPUT_TOO_LARGE,
    LANES,
    LISTED,
    MAX_ATTEMPTS,
    NAMES,
    OWNER,
    PRIORITY_VALUES,
    PUBLIC,
    STATUSES,
    JsonText,
    cancelled_unrun,
    data_errors_as_invalid,
    json_text,
    unavailable_as_error,
)
from tasklane.store.tables import tasks, workflows
from tasklane.workflows import payload_json


def _insert_steps_statement() -> Any:
    """A workflow's tasks: as :func:`_insert_statement`, with each task's status and its
    ``step`` (a JSON array ``steps``, zipped by position) and the workflow's id."""
    columns = (
        func.unnest(IDS, NAMES, LANES, MAX_ATTEMPTS, STATUSES, PRIORITY_VALUES)
        .table_valued(
            *("id", "task", "lane", "max_attempts", "status", "priority"), with_ordinality="n"
        )
        .render_derived("t")
    )
    payloads = (
        func.jsonb_array_elements(bindparam("payloads", type_=JsonText()))
        .table_valued("value", with_ordinality="n")
        .render_derived("p")
    )
    steps = (
        func.jsonb_array_elements(bindparam("steps", type_=JsonText()))
        .table_valued("value", with_ordinality="n")
        .render_derived("s")
    )
    rows = select(
        columns.c.id,
        columns.c.task,
        columns.c.lane,
        columns.c.status,
        payloads.c.value,
        columns.c.max_attempts,
        bindparam("workflow", type_=UUID(as_uuid=True)),
        steps.c.value,
        OWNER,
        columns.c.priority,
    ).select_from(
        columns.join(payloads, columns.c.n == payloads.c.n).join(steps, columns.c.n == steps.c.n)
    )
    inserted = (
        insert(tasks)
        .from_select(
            [
                *("id", "task", "lane", "status", "payload", "max_attempts"),
                *("workflow_id", "step", "owner", "priority"),
            ],
            rows,
        )
        .returning(tasks.c.created_at)
        .cte("inserted")
    )
    return select(func.count(), func.min(inserted.c.created_at))


_INSERT_STEPS = _insert_steps_statement()


class Workflows(StoreBase):
    """A workflow's rows, the release of its steps, its results and its cancel."""

    def insert_workflow(
        self,
        workflow_id: uuid.UUID,
        output: Any,
        new: Sequence[NewTask],
        steps: Sequence[dict],
        connection: Connection | None = None,
        owner: str = "",
    ) -> list[TaskRecord]:
        """Store a workflow and all its tasks (``owner``'s) in one transaction: the first steps
        ``pending`` (the caller sends them), the others ``waiting``. ``steps[i]`` is
        ``new[i]``'s place in the workflow (:meth:`tasklane.workflows.Step.step_json`)."""
        statuses = [
            Status.WAITING.value if step["after"] else Status.PENDING.value for step in steps
        ]
        params = {
            "ids": [t.id for t in new],
            "names": [t.task for t in new],
            "lanes": [t.lane for t in new],
            "max_attempts": [t.max_attempts for t in new],
            "statuses": statuses,
            "priorities": [t.priority or None for t in new],
            "workflow": workflow_id,
            "payloads": f"[{','.join(t.payload_json for t in new)}]",
            "steps": json_text(list(steps)),
            "owner": owner,
        }
        workflow_row = insert(workflows).values(
            id=workflow_id, members=[t.id for t in new], output=literal(output, JSONB), owner=owner
        )
        with (
            unavailable_as_error(),
            self._transaction(connection) as conn,
            data_errors_as_invalid(),
        ):
            conn.execute(workflow_row)
            count, created_at = conn.execute(_INSERT_STEPS, params).one()
            if count != len(new):
                raise InvalidRequest(f"expected {len(new)} payloads, stored {count}")
        return [
            TaskRecord(
                id=t.id,
                task=t.task,
                lane=t.lane,
                status=Status(status),
                attempts=0,
                created_at=created_at,
                updated_at=created_at,
                workflow_id=workflow_id,
                owner=owner,
                priority=t.priority or None,
            )
            for t, status in zip(new, statuses, strict=True)
        ]

    def _release(self, conn: Connection, then: Sequence[str]) -> list[TaskRecord]:
        """Make ``pending`` each of the steps ``then`` whose predecessors have all succeeded,
        with its payload, and return them. (A replayed outcome, after a lost reply, releases
        nothing again: what it released is ``pending``, and the reconciler sends it if the
        first send never happened.)

        Each step's row is locked (in id order: no deadlock between two predecessors) before its
        predecessors are read, in a statement of its own: two predecessors finishing at once
        queue on that lock, and the second reads after the first committed. So the last to
        finish always sees all of them succeeded, and only one release can happen: the step is
        then no longer ``waiting``.
        """
        waiting = (
            conn.execute(
                select(tasks.c.id)
                .where(tasks.c.id == any_(IDS), tasks.c.status == Status.WAITING.value)
                .order_by(tasks.c.id)
                .with_for_update(),
                {"ids": sorted(uuid.UUID(i) for i in then)},
            )
            .scalars()
            .all()
        )
        if not waiting:
            return []
        after = func.jsonb_array_elements_text(tasks.c.step["after"]).table_valued("value")
        before = tasks.alias("before")
        unfinished = (
            select(literal(1))
            .select_from(after.join(before, before.c.id == cast(after.c.value, UUID)))
            .where(before.c.status != Status.SUCCEEDED.value)
            .exists()
        )
        ready = conn.execute(
            select(tasks.c.id, tasks.c.step, cast(tasks.c.payload, Text).label("own")).where(
                tasks.c.id == any_(IDS), ~unfinished
            ),
            {"ids": list(waiting)},
        ).all()
        if not ready:
            return []
        sources = sorted({uuid.UUID(i) for r in ready for i in r.step["after"]})
        sizes = dict(
            conn.execute(
                select(cast(tasks.c.id, Text), func.octet_length(cast(tasks.c.result, Text))).where(
                    tasks.c.id == any_(IDS)
                ),
                {"ids": sources},
            ).all()
        )
        too_big = [
            r for r in ready if sum(sizes[i] or 0 for i in r.step["after"]) > self.max_payload_bytes
        ]
        if too_big:  # fail the step that cannot take its input, not the member that finished
            size = max(sum(sizes[i] or 0 for i in r.step["after"]) for r in too_big)
            error = {
                "type": INPUT_TOO_LARGE,
                "message": f"the results before it come to {size} bytes, over the "
                f"{self.max_payload_bytes} a payload may be (MAX_PAYLOAD_BYTES)",
            }
            conn.execute(
                update(tasks)
                .where(tasks.c.id == any_(IDS), tasks.c.status == Status.WAITING.value)
                .values(
                    status=Status.FAILED.value,
                    error=literal(error, JSONB),
                    finished_at=func.now(),
                    updated_at=func.now(),
                ),
                {"ids": [r.id for r in too_big]},
            )
            ready = [r for r in ready if r not in too_big]
            if not ready:
                return []
        results = dict(
            conn.execute(
                select(cast(tasks.c.id, Text), cast(tasks.c.result, Text)).where(
                    tasks.c.id == any_(IDS)
                ),
                {"ids": sources},
            ).all()
        )
        payloads = (
            func.unnest(IDS, cast(bindparam("texts"), ARRAY(Text)))
            .table_valued("id", "payload")
            .render_derived("r")
        )
        released = conn.execute(
            update(tasks)
            .where(tasks.c.id == payloads.c.id, tasks.c.status == Status.WAITING.value)
            .values(
                status=Status.PENDING.value,
                payload=cast(payloads.c.payload, JSONB),
                updated_at=func.now(),
            )
            .returning(*PUBLIC),
            {
                "ids": [r.id for r in ready],
                "texts": [payload_json(r.step, r.own, results) for r in ready],
            },
        )
        return [TaskRecord.from_row(r) for r in released]

    def workflow(
        self, workflow_id: uuid.UUID
    ) -> tuple[Any, list[TaskRecord], dict[uuid.UUID, list[str]]]:
        """A workflow's row, its tasks in member order as listings have them (without results:
        :meth:`results_of`), and the steps each waits for (its graph); :class:`TaskNotFound` if
        none."""
        with unavailable_as_error(), self.engine.connect() as conn:
            row = conn.execute(select(workflows).where(workflows.c.id == workflow_id)).first()
            if row is None:
                raise TaskNotFound(f"no workflow with id {workflow_id}")
            rows = conn.execute(
                select(*LISTED, tasks.c.step["after"].label("after")).where(
                    tasks.c.id == any_(IDS)
                ),
                {"ids": row.members},
            ).all()
        found = {r.id: TaskRecord.from_row(r) for r in rows}
        after = {r.id: [str(i) for i in (r.after or [])] for r in rows}
        return row, [found[i] for i in row.members], after

    def results_of(
        self, ids: Sequence[uuid.UUID], max_bytes: int | None = None
    ) -> tuple[dict[uuid.UUID, Any] | None, int]:
        """These tasks' results and their size together (as JSON text, in bytes); the
        results are not read (None) when that is over ``max_bytes``."""
        params = {"ids": list(ids)}
        size = select(
            func.coalesce(func.sum(func.octet_length(cast(tasks.c.result, Text))), 0)
        ).where(tasks.c.id == any_(IDS))
        with unavailable_as_error(), self.engine.connect() as conn:
            total = int(conn.execute(size, params).scalar_one())
            if max_bytes is not None and total > max_bytes:
                return None, total
            rows = conn.execute(
                select(tasks.c.id, tasks.c.result).where(tasks.c.id == any_(IDS)), params
            )
            return {r.id: r.result for r in rows}, total

    def cancel_workflow(self, workflow_id: uuid.UUID) -> int:
        """Cancel what has not run of a workflow: its waiting tasks now, its running ones asked
        to stop. Returns how many tasks were cancelled or asked."""
        with unavailable_as_error(), self.engine.begin() as conn:
            exists = conn.execute(
                select(workflows.c.id).where(workflows.c.id == workflow_id)
            ).first()
            if exists is None:
                raise TaskNotFound(f"no workflow with id {workflow_id}")
            return self._cancel_members(conn, workflow_id)

    @staticmethod
    def _cancel_members(conn: Connection, workflow_id: uuid.UUID) -> int:
        """:meth:`cancel_workflow` in ``conn``'s transaction."""
        members = select(func.unnest(workflows.c.members)).where(workflows.c.id == workflow_id)
        waiting = [Status.WAITING, Status.PENDING, Status.SCHEDULED, Status.QUEUED]
        cancelled = (
            update(tasks)
            .where(tasks.c.id.in_(members), tasks.c.status.in_([s.value for s in waiting]))
            .values(**cancelled_unrun("its workflow was cancelled"))
        )
        asked = (
            update(tasks)
            .where(
                tasks.c.id.in_(members),
                tasks.c.status == Status.RUNNING.value,
                tasks.c.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=func.now())
        )
        running = (
            select(tasks.c.id)
            .where(tasks.c.id.in_(members), tasks.c.status == Status.RUNNING.value)
            .order_by(tasks.c.id)
            .with_for_update()
        )
        # Running tasks first, then waiting ones: the order a member's outcome takes its
        # locks in (its own row, then the steps waiting for it). The other order deadlocked.
        conn.execute(running).all()
        asked_count = conn.execute(asked).rowcount
        return conn.execute(cancelled).rowcount + asked_count
