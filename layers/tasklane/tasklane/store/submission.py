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
    Float,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.errors import InvalidRequest, StoreUnavailable
from tasklane.lanes import priority_of
from tasklane.lifecycle import LIVE_STATUSES, Status
from tasklane.store.base import StoreBase
from tasklane.store.records import KeyUse, NewTask, TaskRecord
from tasklane.store.sql import (
    IDS,
    LANES,
    MAX_ATTEMPTS,
    NAMES,
    NEAR,
    OWNER,
    PRIORITY_VALUES,
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


def _unique_until(seconds: Any) -> Any:
    """Until when a unique task's key stays taken whatever its status: ``seconds`` (its
    ``unique_for``) from now; null without a window."""
    return func.now() + seconds * literal_column("interval '1 second'")


def _insert_statement() -> Any:
    """``INSERT … SELECT`` from the arrays ``ids``, ``names``, ``lanes``, ``max_attempts``,
    ``run_ats`` and the JSON array ``payloads``, zipped by position; returns (rows inserted,
    their ``created_at``)."""
    unique_keys = cast(bindparam("unique_keys"), ARRAY(Text))
    unique_fors = cast(bindparam("unique_fors"), ARRAY(Float))
    concurrency_keys = cast(bindparam("concurrency_keys"), ARRAY(Text))
    rate_keys = cast(bindparam("rate_keys"), ARRAY(Text))
    ordering_keys = cast(bindparam("ordering_keys"), ARRAY(Text))
    waiting_ons = cast(bindparam("waiting_ons"), ARRAY(Text))
    columns = (
        func.unnest(
            *(IDS, NAMES, LANES, MAX_ATTEMPTS, RUN_ATS, unique_keys, unique_fors),
            *(concurrency_keys, rate_keys, ordering_keys, waiting_ons, PRIORITY_VALUES),
        )
        .table_valued(
            *("id", "task", "lane", "max_attempts", "run_at", "unique_key", "unique_for"),
            *("concurrency_key", "rate_key", "ordering_key", "waiting_on", "priority"),
            with_ordinality="n",
        )
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
        # a task behind another of its ordering key waits, unsent, for that one's end
        case(
            (columns.c.waiting_on.is_not(None), Status.WAITING.value),
            else_=_status_for(columns.c.run_at),
        ),
        payloads.c.value,
        columns.c.max_attempts,
        columns.c.run_at,
        OWNER,
        columns.c.unique_key,
        _unique_until(columns.c.unique_for),
        columns.c.concurrency_key,
        columns.c.rate_key,
        columns.c.ordering_key,
        case((columns.c.ordering_key.is_not(None), columns.c.n), else_=None),
        columns.c.waiting_on,
        columns.c.priority,
    ).select_from(columns.join(payloads, columns.c.n == payloads.c.n))
    inserted = (
        insert(tasks)
        .from_select(
            [
                *("id", "task", "lane", "status", "payload", "max_attempts", "run_at"),
                *("owner", "unique_key", "unique_until", "concurrency_key", "rate_key"),
                *("ordering_key", "ordering_pos", "waiting_on", "priority"),
            ],
            rows,
        )
        .returning(tasks.c.created_at)
        .cte("inserted")
    )
    return select(func.count(), func.min(inserted.c.created_at))


_INSERT = _insert_statement()

#: A unique or ordered task's lock, held to the end of the transaction that inserts it
#: (:func:`key_locks`), hashed into Postgres' 64-bit lock space (a collision only makes two
#: keys wait for each other).
_KEY_LOCK = select(
    func.pg_advisory_xact_lock(func.hashtextextended(bindparam("lock_name", type_=Text), 0))
)
#: The newest task a unique submission matches: same name and key, and in a covered status or
#: created within the window.
_UNIQUE_MATCH = (
    select(*PUBLIC)
    .where(
        tasks.c.task == bindparam("unique_task", type_=Text),
        tasks.c.unique_key == bindparam("unique_key", type_=Text),
        tasks.c.owner == bindparam("unique_owner", type_=Text),  # keys are each owner's own
        or_(
            tasks.c.status == any_(bindparam("unique_states", type_=ARRAY(Text))),
            tasks.c.unique_until > func.now(),
        ),
    )
    .order_by(tasks.c.created_at.desc())
    .limit(1)
)


#: The newest live task of an ordering key's line (its owner's): what a new one waits for.
_LINE_LAST = (
    select(tasks.c.id)
    .where(
        tasks.c.task == bindparam("line_task", type_=Text),
        tasks.c.ordering_key == bindparam("line_key", type_=Text),
        tasks.c.owner == bindparam("line_owner", type_=Text),
        tasks.c.status.in_([s.value for s in LIVE_STATUSES]),
    )
    .order_by(tasks.c.created_at.desc(), tasks.c.ordering_pos.desc(), tasks.c.id.desc())
    .limit(1)
)


#: Tries of an idempotent insert whose key's row vanished (pruned) between its statements.
KEY_TRIES = 3


def key_locks(new: Sequence[NewTask], owner: str) -> list[str]:
    """The transaction locks an insert of ``new`` takes, in one order: each unique key and
    each ordering key of its tasks, by owner and name."""
    names = {f"unique\x1f{owner}\x1f{t.task}\x1f{t.unique_key}" for t in new if t.unique_key}
    names |= {f"ordering\x1f{owner}\x1f{t.task}\x1f{t.ordering_key}" for t in new if t.ordering_key}
    return sorted(names)


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
        if any(t.unique_key is not None or t.ordering_key is not None for t in new):
            return self._insert_unique(new, near_seconds, connection, owner)
        return self._insert_rows(new, near_seconds, connection, owner)

    def _insert_rows(
        self,
        new: Sequence[NewTask],
        near_seconds: float,
        connection: Connection | None,
        owner: str,
        within: bool = False,
        behind: dict[uuid.UUID, str] | None = None,
    ) -> list[TaskRecord]:
        """The one statement of :meth:`insert` (``within``: in ``connection``'s transaction as
        it is, which the caller opened: no savepoint of its own). ``behind``: the ordered
        tasks that wait, unsent, for the task ahead of them, with why."""
        behind = behind or {}
        if not new:
            return []
        params = {
            "ids": [t.id for t in new],
            "names": [t.task for t in new],
            "lanes": [t.lane for t in new],
            "max_attempts": [t.max_attempts for t in new],
            "run_ats": [t.run_at for t in new],
            "unique_keys": [t.unique_key for t in new],
            "unique_fors": [t.unique_for for t in new],
            "concurrency_keys": [t.concurrency_key for t in new],
            "rate_keys": [t.rate_key for t in new],
            "ordering_keys": [t.ordering_key for t in new],
            "waiting_ons": [behind.get(t.id) for t in new],
            "priorities": [t.priority or None for t in new],
            "near": timedelta(seconds=near_seconds),
            "owner": owner,
            # already-serialized JSON, joined: no payload is parsed or re-encoded in Python
            "payloads": f"[{','.join(t.payload_json for t in new)}]",
        }
        opened = contextlib.nullcontext(connection) if within else self._transaction(connection)
        with unavailable_as_error(), opened as conn, data_errors_as_invalid():
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
                    Status.WAITING
                    if t.id in behind
                    else Status.SCHEDULED
                    if t.run_at is not None and t.run_at > created_at + near
                    else Status.PENDING
                ),  # as the statement decided, from the same now()
                waiting_on=behind.get(t.id),
                attempts=0,
                created_at=created_at,
                updated_at=created_at,  # both default to the transaction's now()
                run_at=t.run_at,
                owner=owner,
                unique_key=t.unique_key,
                concurrency_key=t.concurrency_key,
                priority=t.priority or None,
            )
            for t in new
        ]

    def _insert_unique(
        self,
        new: Sequence[NewTask],
        near_seconds: float,
        connection: Connection | None,
        owner: str,
    ) -> list[TaskRecord]:
        """:meth:`insert` of tasks some of which are unique or ordered: each unique one whose
        key matches a task (:data:`_UNIQUE_MATCH`), or an earlier one of the same batch, is
        that task instead. The keys' locks are taken first, in one order, so two producers
        inserting the same keys at once wait for each other (the second sees the first's
        commit, and an ordered key's tasks are in the order of their commits) and within a
        batch never deadlock; with ``connection``, they are held until the caller commits."""
        with unavailable_as_error(), self._transaction(connection) as conn:
            found = self.unique_matches(new, conn, owner)
            fresh = [t for t in new if t.id not in found]
            behind = self._behind(fresh, conn, owner)
            inserted = {
                r.id: r for r in self._insert_rows(fresh, near_seconds, conn, owner, True, behind)
            }
        answer = [found.get(t.id, t.id) for t in new]
        return [inserted[a] if isinstance(a, uuid.UUID) else a for a in answer]

    @staticmethod
    def _behind(new: Sequence[NewTask], conn: Connection, owner: str) -> dict[uuid.UUID, str]:
        """The ordered tasks of ``new`` that join a line with a live task in it (read under
        their keys' locks), each with why it waits: the task just ahead of it."""
        last: dict[tuple[str, str], Any] = {}
        behind = {}
        for t in new:
            if t.ordering_key is None:
                continue
            line = (t.task, t.ordering_key)
            if line not in last:
                last[line] = conn.execute(
                    _LINE_LAST,
                    {"line_task": t.task, "line_key": t.ordering_key, "line_owner": owner},
                ).scalar()
            if last[line] is not None:
                behind[t.id] = f"in order after {last[line]} ({t.ordering_key})"
            last[line] = t.id
        return behind

    def unique_matches(
        self, new: Sequence[NewTask], conn: Connection, owner: str
    ) -> dict[uuid.UUID, TaskRecord | uuid.UUID]:
        """The unique tasks of ``new`` that are duplicates of ``owner``'s, each with the task
        it matches (the id of an earlier task of ``new`` itself, not stored yet). Locks their
        keys. (Keys are each owner's, as idempotency keys are: a caller never learns of, nor
        is answered with, another's task.)"""
        for name in key_locks(new, owner):
            with data_errors_as_invalid():
                conn.execute(_KEY_LOCK, {"lock_name": name})
        found: dict[uuid.UUID, TaskRecord | uuid.UUID] = {}
        first: dict[tuple[str, str], uuid.UUID] = {}
        for t in new:
            if t.unique_key is None:
                continue
            if (t.task, t.unique_key) in first:
                found[t.id] = first[(t.task, t.unique_key)]
                continue
            row = conn.execute(
                _UNIQUE_MATCH,
                {
                    "unique_task": t.task,
                    "unique_key": t.unique_key,
                    "unique_states": list(t.unique_states),
                    "unique_owner": owner,
                },
            ).first()
            if row is not None:
                found[t.id] = TaskRecord.from_row(row)
            else:
                first[(t.task, t.unique_key)] = t.id
        return found

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

        def statement(waiting_on: str | None) -> Any:
            status = _status_for(literal(new.run_at, DateTime(timezone=True)))
            return pg_insert(tasks).values(
                id=new.id,
                task=new.task,
                lane=new.lane,
                status=status if waiting_on is None else Status.WAITING.value,
                waiting_on=waiting_on,
                payload=jsonb_of(new.payload_json),
                max_attempts=new.max_attempts,
                run_at=new.run_at,
                unique_key=new.unique_key,
                unique_until=_unique_until(literal(new.unique_for, Float())),
                concurrency_key=new.concurrency_key,
                rate_key=new.rate_key,
                ordering_key=new.ordering_key,
                ordering_pos=None if new.ordering_key is None else 1,
                priority=new.priority or None,
                idempotency_key=key,
                request_hash=request_hash,
                owner=owner,
            )

        near = {"near": timedelta(seconds=near_seconds)}
        earlier = select(*PUBLIC, tasks.c.request_hash).where(
            tasks.c.owner == owner, tasks.c.idempotency_key == key
        )
        with unavailable_as_error(), self._transaction(connection) as conn:
            if new.unique_key is None and new.ordering_key is not None:
                for name in key_locks([new], owner):
                    conn.execute(_KEY_LOCK, {"lock_name": name})
            if new.unique_key is not None:
                # the key first: a request replayed, or another under the same key (422)
                if (row := conn.execute(earlier).first()) is not None:
                    return TaskRecord.from_row(row), row.request_hash, False
                if match := self.unique_matches([new], conn, owner):
                    # the same work is live: that task (this request's key is not recorded)
                    return match[new.id], request_hash, False  # type: ignore[return-value]
            behind = self._behind([new], conn, owner).get(new.id)
            stmt = (
                statement(behind)
                .on_conflict_do_nothing(
                    index_elements=[tasks.c.owner, tasks.c.idempotency_key],
                    index_where=tasks.c.idempotency_key.is_not(None),
                )
                .returning(*PUBLIC, tasks.c.request_hash)
            )
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

    def answered(
        self, use: KeyUse, kind: str, key: str, owner: str, ids: Sequence[uuid.UUID]
    ) -> None:
        """Record, in the key's own transaction, the ids a request keyed ``key`` was answered
        with when they are not the ones it created (a unique task's duplicate is the task it
        matched), so that a replay is answered the same, in the same places."""
        use.connection.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.owner == owner,
                idempotency_keys.c.kind == kind,
                idempotency_keys.c.key == key,
            )
            .values(ids=list(ids))
        )

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
        meta, and as the row's own when it is one of tasklane's, 1 to 9). A message sent again
        under the same id (a retry, a replacement) renews the row, unless the task has
        already succeeded."""
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
            # every later send of the task goes by the queue of its priority (tasklane.lanes)
            "priority": priority_of(priority) or None,
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
