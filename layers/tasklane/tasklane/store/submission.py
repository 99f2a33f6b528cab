"""Submission: the rows of new tasks, one multi-row insert for any number of them, idempotency
keys, the mark that a message was sent, and a Celery message's arguments.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.errors import InvalidRequest, StoreUnavailable
from tasklane.lifecycle import Status
from tasklane.store.base import StoreBase
from tasklane.store.records import KeyUse, NewTask, TaskRecord
from tasklane.store.sql import (
    IDS,
    LANES,
    MAX_ATTEMPTS,
    NAMES,
    NEAR,
    OWNER,
    PUBLIC,
    RUN_ATS,
    JsonText,
    data_errors_as_invalid,
    json_text,
    jsonb_of,
    unavailable_as_error,
)
from tasklane.store.tables import idempotency_keys, tasks


def _status_for(run_at: Any) -> Any:
    """``scheduled`` for a task due later than a message can be delayed, else ``pending``."""
    return case((run_at > func.now() + NEAR, Status.SCHEDULED.value), else_=Status.PENDING.value)


def _insert_statement() -> Any:
    """``INSERT … SELECT`` from the arrays ``ids``, ``names``, ``lanes``, ``max_attempts``,
    ``run_ats`` and the JSON array ``payloads``, zipped by position; returns (rows inserted,
    their ``created_at``)."""
    columns = (
        func.unnest(IDS, NAMES, LANES, MAX_ATTEMPTS, RUN_ATS)
        .table_valued("id", "task", "lane", "max_attempts", "run_at", with_ordinality="n")
        .render_derived("t")
    )
    payloads = (
        func.jsonb_array_elements(bindparam("payloads", type_=JsonText()))
        .table_valued("value", with_ordinality="n")
        .render_derived("p")
    )
    rows = select(
        columns.c.id,
        columns.c.task,
        columns.c.lane,
        _status_for(columns.c.run_at),
        payloads.c.value,
        columns.c.max_attempts,
        columns.c.run_at,
        OWNER,
    ).select_from(columns.join(payloads, columns.c.n == payloads.c.n))
    inserted = (
        insert(tasks)
        .from_select(
            ["id", "task", "lane", "status", "payload", "max_attempts", "run_at", "owner"], rows
        )
        .returning(tasks.c.created_at)
        .cte("inserted")
    )
    return select(func.count(), func.min(inserted.c.created_at))


_INSERT = _insert_statement()


#: Tries of an idempotent insert whose key's row vanished (pruned) between its statements.
KEY_TRIES = 3


class Submissions(StoreBase):
    """New tasks and their keys; the mark that their message is out."""

    def insert(
        self,
        new: Sequence[NewTask],
        near_seconds: float = 0,
        connection: Connection | None = None,
        owner: str = "",
    ) -> list[TaskRecord]:
        """Store new tasks (submitted by ``owner``) in one statement whose text does not grow
        with the batch: ``pending``, or ``scheduled`` when due more than ``near_seconds`` from
        now. With ``connection``, in the caller's transaction.

        The columns travel as arrays (``unnest``) and the payloads as one JSON array, split in
        SQL; one row comes back (the count and the shared ``now()``), not one per task. A
        ``VALUES`` list of a hundred rows costs the client more than the database: building and
        scanning its SQL, converting every parameter, parsing every returned timestamp.
        """
        if not new:
            return []
        params = {
            "ids": [t.id for t in new],
            "names": [t.task for t in new],
            "lanes": [t.lane for t in new],
            "max_attempts": [t.max_attempts for t in new],
            "run_ats": [t.run_at for t in new],
            "near": timedelta(seconds=near_seconds),
            "owner": owner,
            # already-serialized JSON, joined: no payload is parsed or re-encoded in Python
            "payloads": f"[{','.join(t.payload_json for t in new)}]",
        }
        with (
            unavailable_as_error(),
            self._transaction(connection) as conn,
            data_errors_as_invalid(),
        ):
            count, created_at = conn.execute(_INSERT, params).one()
            if count != len(new):  # a payload_json that is not one JSON value; rolls back
                raise InvalidRequest(f"expected {len(new)} payloads, stored {count}")
        near = timedelta(seconds=near_seconds)
        return [
            TaskRecord(
                id=t.id,
                task=t.task,
                lane=t.lane,
                status=(
                    Status.SCHEDULED
                    if t.run_at is not None and t.run_at > created_at + near
                    else Status.PENDING
                ),  # as the statement decided, from the same now()
                attempts=0,
                created_at=created_at,
                updated_at=created_at,  # both default to the transaction's now()
                run_at=t.run_at,
                owner=owner,
            )
            for t in new
        ]

    def insert_idempotent(
        self,
        new: NewTask,
        key: str,
        request_hash: str,
        near_seconds: float = 0,
        connection: Connection | None = None,
        owner: str = "",
    ) -> tuple[TaskRecord, str | None, bool]:
        """Insert unless ``owner`` used ``key`` before (keys are each owner's own). Returns
        (task, its request hash, created)."""
        stmt = (
            pg_insert(tasks)
            .values(
                id=new.id,
                task=new.task,
                lane=new.lane,
                status=_status_for(literal(new.run_at, DateTime(timezone=True))),
                payload=jsonb_of(new.payload_json),
                max_attempts=new.max_attempts,
                run_at=new.run_at,
                idempotency_key=key,
                request_hash=request_hash,
                owner=owner,
            )
            .on_conflict_do_nothing(
                index_elements=[tasks.c.owner, tasks.c.idempotency_key],
                index_where=tasks.c.idempotency_key.is_not(None),
            )
            .returning(*PUBLIC, tasks.c.request_hash)
        )
        near = {"near": timedelta(seconds=near_seconds)}
        earlier = select(*PUBLIC, tasks.c.request_hash).where(
            tasks.c.owner == owner, tasks.c.idempotency_key == key
        )
        with unavailable_as_error(), self._transaction(connection) as conn:
            # the row a key names may be pruned between the two statements: then the key is
            # free again, and the insert is tried once more
            for _ in range(KEY_TRIES):
                with data_errors_as_invalid():
                    row = conn.execute(stmt, near).first()
                if row is not None:
                    return TaskRecord.from_row(row), row.request_hash, True
                row = conn.execute(earlier).first()
                if row is not None:
                    return TaskRecord.from_row(row), row.request_hash, False
        raise StoreUnavailable("the idempotency key's task kept changing; try again")

    @contextlib.contextmanager
    def keyed(
        self,
        kind: str,
        key: str,
        request_hash: str,
        ids: Sequence[uuid.UUID],
        connection: Connection | None = None,
        owner: str = "",
    ) -> Iterator[KeyUse]:
        """A transaction (or a savepoint in ``connection``'s) that records ``owner``'s ``key``
        for a request of ``kind`` creating ``ids``. If the key was recorded before, nothing is
        written: the :class:`KeyUse` says so, with the first request's hash and ids, and the
        caller creates nothing. Two requests with one key at once: the second waits for the
        first's commit and finds its key."""
        stmt = (
            pg_insert(idempotency_keys)
            .values(owner=owner, kind=kind, key=key, request_hash=request_hash, ids=list(ids))
            .on_conflict_do_nothing()
        )
        prior = select(idempotency_keys.c.request_hash, idempotency_keys.c.ids).where(
            idempotency_keys.c.owner == owner,
            idempotency_keys.c.kind == kind,
            idempotency_keys.c.key == key,
        )
        with unavailable_as_error(), self._transaction(connection) as conn:
            for _ in range(KEY_TRIES):  # the key may be pruned in between: free again
                if conn.execute(stmt).rowcount == 1:
                    use = KeyUse(conn, True, request_hash, list(ids))
                    break
                if (row := conn.execute(prior).first()) is not None:
                    use = KeyUse(conn, False, row.request_hash, list(row.ids))
                    break
            else:
                raise StoreUnavailable("the idempotency key kept changing; try again")
            yield use

    def pending_among(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these tasks exist and are still ``pending`` (committed, not yet sent)."""
        stmt = select(tasks.c.id).where(
            tasks.c.id == any_(IDS), tasks.c.status == Status.PENDING.value
        )
        with unavailable_as_error(), self.engine.connect() as conn:
            return set(conn.execute(stmt, {"ids": list(ids)}).scalars())

    def mark_queued(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """``pending → queued`` for the tasks whose message SQS accepted."""
        if not ids:
            return set()
        stmt = (
            update(tasks)
            .where(tasks.c.id == any_(IDS), tasks.c.status == Status.PENDING.value)
            .values(status=Status.QUEUED.value, updated_at=func.now())
            .returning(tasks.c.id)
        )
        with unavailable_as_error(), self._single() as conn:
            return set(conn.execute(stmt, {"ids": list(ids)}).scalars())

    def put_celery_message(
        self,
        task_id: uuid.UUID,
        task: str,
        lane: str,
        payload: dict,
        max_attempts: int | None,
        priority: int | None = None,
    ) -> None:
        """An adopted Celery task's message, about to be sent: its row, ``queued``, with the
        message's arguments as payload (and its ``priority``, if given, in the row's Celery
        meta). A message sent again under the same id (a retry, a replacement) renews the row,
        unless the task has already succeeded."""
        text = json_text(payload)
        if len(text.encode()) > self.max_payload_bytes:
            raise InvalidRequest(
                f"task arguments are {len(text.encode())} bytes, over {self.max_payload_bytes}"
            )
        values = {
            "task": task,
            "lane": lane,
            "status": Status.QUEUED.value,
            "payload": jsonb_of(text),
            "celery": literal(
                json.dumps({} if priority is None else {"priority": priority}), JsonText()
            ),
            "max_attempts": max_attempts,
        }
        renewed = values | {
            "lease_until": None,
            "result": None,
            "error": None,
            "finished_at": None,
            "cancel_requested_at": None,
            "updated_at": func.now(),
        }
        statement = (
            pg_insert(tasks)
            .values(id=task_id, **values)
            .on_conflict_do_update(
                index_elements=[tasks.c.id],
                set_=renewed,
                where=tasks.c.status != Status.SUCCEEDED.value,
            )
        )
        with unavailable_as_error(), data_errors_as_invalid(), self.engine.begin() as conn:
            conn.execute(statement)

    def payload_of(self, task_id: uuid.UUID) -> Any:
        """A task's payload (None: no such task, or its payload was pruned)."""
        with unavailable_as_error(), self.engine.connect() as conn:
            return conn.execute(select(tasks.c.payload).where(tasks.c.id == task_id)).scalar()

    def mark_celerys(self, task_id: uuid.UUID, connection: Connection | None = None) -> None:
        """Mark a task as a Celery task's (``celery`` not NULL), so Celery's backend records
        its outcome (:mod:`tasklane.results`); in ``connection``'s transaction if given."""
        statement = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.celery.is_(None))
            .values(celery=literal("{}", JsonText()))
        )
        with unavailable_as_error(), self._transaction(connection) as conn:
            conn.execute(statement)
