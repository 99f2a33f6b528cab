"""The store: the ``tasks`` table and the conditional updates that move a task through its life.

Postgres is the record of every task. Each transition is a single conditional ``UPDATE``, so a
race between two deliveries, two reconcilers or a retry and a consumer is decided by the database,
not by timing: the status (and, for a running task, the attempt number that holds the claim) is
part of every ``WHERE``. Payloads and results arrive here already serialized to JSON text and are
cast to ``jsonb`` in SQL, so a multi-megabyte payload is serialized exactly once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    Interval,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.errors import InvalidRequest, InvalidTransition, StoreUnavailable, TaskNotFound
from tasklane.lifecycle import CLAIMABLE, TERMINAL, Status

metadata = MetaData()

tasks = Table(
    "tasks",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("task", String(200), nullable=False),
    Column("lane", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("payload", JSONB(none_as_null=False)),
    Column("result", JSONB(none_as_null=False)),
    Column("error", JSONB(none_as_null=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer),
    Column("idempotency_key", String(255), unique=True),
    Column("request_hash", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint(
        "status IN ('pending', 'queued', 'running', 'succeeded', 'failed')",
        name="ck_tasks_status",
    ),
    CheckConstraint("lane IN ('lambda', 'celery')", name="ck_tasks_lane"),
    Index("ix_tasks_status_updated_at", "status", "updated_at"),
    Index("ix_tasks_created_at", "created_at"),
)

_PUBLIC = (
    tasks.c.id,
    tasks.c.task,
    tasks.c.lane,
    tasks.c.status,
    tasks.c.attempts,
    tasks.c.result,
    tasks.c.error,
    tasks.c.created_at,
    tasks.c.updated_at,
)
_IDS = cast(bindparam("ids"), ARRAY(UUID(as_uuid=True)))
_NAMES = cast(bindparam("names"), ARRAY(Text))
_LANES = cast(bindparam("lanes"), ARRAY(Text))
_MAX_ATTEMPTS = cast(bindparam("max_attempts"), ARRAY(Integer))


class JsonText(TypeDecorator):
    """JSON the caller has already serialized: bound as text and cast to jsonb in SQL, so a
    multi-megabyte payload is serialized once, and statements stay cacheable."""

    impl = Text
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, JSONB)


def _insert_statement() -> Any:
    """``INSERT … SELECT`` from the arrays ``ids``, ``names``, ``lanes``, ``max_attempts`` and the
    JSON array ``payloads``, zipped by position; returns (rows inserted, their ``created_at``)."""
    columns = (
        func.unnest(_IDS, _NAMES, _LANES, _MAX_ATTEMPTS)
        .table_valued("id", "task", "lane", "max_attempts", with_ordinality="n")
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
        literal(Status.PENDING.value),
        payloads.c.value,
        columns.c.max_attempts,
    ).select_from(columns.join(payloads, columns.c.n == payloads.c.n))
    inserted = (
        insert(tasks)
        .from_select(["id", "task", "lane", "status", "payload", "max_attempts"], rows)
        .returning(tasks.c.created_at)
        .cte("inserted")
    )
    return select(func.count(), func.min(inserted.c.created_at))


_INSERT = _insert_statement()


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as clients see it (the payload stays in the database)."""

    id: uuid.UUID
    task: str
    lane: str
    status: Status
    attempts: int
    result: Any = None
    error: dict | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> TaskRecord:
        m = row._mapping
        return cls(**{c.name: m[c.name] for c in _PUBLIC} | {"status": Status(m["status"])})


@dataclass(frozen=True, slots=True)
class NewTask:
    id: uuid.UUID
    task: str
    lane: str
    payload_json: str
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """This delivery holds the task: attempt ``attempt`` until its lease runs out."""

    id: uuid.UUID
    attempt: int
    payload: Any


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Why a delivery could not claim: the task's status (None: no such row)."""

    id: uuid.UUID
    status: Status | None
    task: str | None


@contextlib.contextmanager
def _unavailable_as_error() -> Iterator[None]:
    """Turn 'cannot reach Postgres' into :class:`StoreUnavailable`; other errors pass through."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StoreUnavailable("the database is unavailable, try again later") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("the database connection was lost, try again later") from exc
        raise


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    args = getattr(exc.orig, "args", None)
    detail = args[0] if args else None
    return detail.get("C", "") if isinstance(detail, dict) else ""


@contextlib.contextmanager
def _data_errors_as_invalid() -> Iterator[None]:
    """A value Postgres cannot store (SQLSTATE class 22, e.g. \\u0000 in jsonb) is the client's."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if _sqlstate(exc).startswith("22"):
            message = exc.orig.args[0].get("M", "invalid value")  # type: ignore[union-attr]
            raise InvalidRequest(f"payload cannot be stored: {message}") from exc
        raise


def _jsonb(text: str | None) -> Any:
    return None if text is None else literal(text, JsonText())


class TaskStore:
    """Every read and write of the ``tasks`` table. One instance per process; holds no state."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- submission --------------------------------------------------------------------------
    def insert(self, new: Sequence[NewTask]) -> list[TaskRecord]:
        """Store new tasks as ``pending`` in one statement whose text does not grow with the batch.

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
            # already-serialized JSON, joined: no payload is parsed or re-encoded in Python
            "payloads": f"[{','.join(t.payload_json for t in new)}]",
        }
        with _unavailable_as_error(), self.engine.begin() as conn, _data_errors_as_invalid():
            count, created_at = conn.execute(_INSERT, params).one()
            if count != len(new):  # a payload_json that is not one JSON value; rolls back
                raise InvalidRequest(f"expected {len(new)} payloads, stored {count}")
        return [
            TaskRecord(
                id=t.id,
                task=t.task,
                lane=t.lane,
                status=Status.PENDING,
                attempts=0,
                created_at=created_at,
                updated_at=created_at,  # both default to the transaction's now()
            )
            for t in new
        ]

    def insert_idempotent(
        self, new: NewTask, key: str, request_hash: str
    ) -> tuple[TaskRecord, str | None, bool]:
        """Insert unless ``key`` was used before. Returns (task, its request hash, created)."""
        stmt = (
            pg_insert(tasks)
            .values(
                id=new.id,
                task=new.task,
                lane=new.lane,
                status=Status.PENDING.value,
                payload=_jsonb(new.payload_json),
                max_attempts=new.max_attempts,
                idempotency_key=key,
                request_hash=request_hash,
            )
            .on_conflict_do_nothing(index_elements=[tasks.c.idempotency_key])
            .returning(*_PUBLIC, tasks.c.request_hash)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            with _data_errors_as_invalid():
                row = conn.execute(stmt).first()
            created = row is not None
            if row is None:
                row = conn.execute(
                    select(*_PUBLIC, tasks.c.request_hash).where(tasks.c.idempotency_key == key)
                ).one()
        return TaskRecord.from_row(row), row.request_hash, created

    def mark_queued(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """``pending → queued`` for the tasks whose message SQS accepted."""
        if not ids:
            return set()
        stmt = (
            update(tasks)
            .where(tasks.c.id == any_(_IDS), tasks.c.status == Status.PENDING.value)
            .values(status=Status.QUEUED.value, updated_at=func.now())
            .returning(tasks.c.id)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return set(conn.execute(stmt, {"ids": list(ids)}).scalars())

    # -- reading -----------------------------------------------------------------------------
    def get(self, task_id: uuid.UUID) -> TaskRecord:
        with _unavailable_as_error(), self.engine.connect() as conn:
            row = conn.execute(select(*_PUBLIC).where(tasks.c.id == task_id)).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return TaskRecord.from_row(row)

    def recent(self, limit: int = 20, status: Status | None = None) -> list[TaskRecord]:
        stmt = select(*_PUBLIC).order_by(tasks.c.created_at.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(tasks.c.status == status.value)
        with _unavailable_as_error(), self.engine.connect() as conn:
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]

    # -- execution ---------------------------------------------------------------------------
    def claim(
        self, wanted: Mapping[uuid.UUID, str], lease_seconds: float
    ) -> dict[uuid.UUID, Claimed | NotClaimed]:
        """Claim every claimable task of ``wanted`` (id → task name) and load its payload.

        One round trip for a whole batch. A task is claimable when its name matches the message,
        and it is ``pending``/``queued``, or ``running`` with an expired lease (its consumer
        died). The claim counts the attempt. Ids not claimed come back with the status and name
        that stopped them, read from the same snapshot.
        """
        if not wanted:
            return {}
        pairs = func.unnest(_IDS, _NAMES).table_valued("id", "task")
        asked = pairs.render_derived("asked")
        claimed = (
            update(tasks)
            .where(
                tasks.c.id == asked.c.id,
                tasks.c.task == asked.c.task,
                or_(
                    tasks.c.status.in_([s.value for s in CLAIMABLE]),
                    and_(tasks.c.status == Status.RUNNING.value, tasks.c.lease_until < func.now()),
                ),
            )
            .values(
                status=Status.RUNNING.value,
                attempts=tasks.c.attempts + 1,
                lease_until=func.now() + literal(timedelta(seconds=lease_seconds), Interval),
                started_at=func.coalesce(tasks.c.started_at, func.now()),
                updated_at=func.now(),
            )
            .returning(tasks.c.id, tasks.c.attempts, tasks.c.payload)
            .cte("claimed")
        )
        each = pairs.render_derived("each")
        stmt = select(
            each.c.id,
            tasks.c.status,
            tasks.c.task,
            claimed.c.attempts,
            claimed.c.payload,
        ).select_from(
            each.outerjoin(tasks, tasks.c.id == each.c.id).outerjoin(
                claimed, claimed.c.id == each.c.id
            )
        )
        params = {"ids": list(wanted), "names": list(wanted.values())}
        out: dict[uuid.UUID, Claimed | NotClaimed] = {}
        with _unavailable_as_error(), self.engine.begin() as conn:
            for row in conn.execute(stmt, params):
                task_id = uuid.UUID(str(row.id))
                if row.attempts is not None:
                    out[task_id] = Claimed(task_id, row.attempts, row.payload)
                else:
                    status = Status(row.status) if row.status else None
                    out[task_id] = NotClaimed(task_id, status, row.task)
        return out

    def _finish(self, task_id: uuid.UUID, attempt: int, **values: Any) -> bool:
        """Write the outcome of ``attempt`` if it still holds the claim."""
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status == Status.RUNNING.value,
                tasks.c.attempts == attempt,
            )
            .values(lease_until=None, updated_at=func.now(), **values)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def succeed(self, task_id: uuid.UUID, attempt: int, result_json: str) -> bool:
        """Store the result (InvalidRequest when Postgres cannot hold it, e.g. \\u0000)."""
        with _data_errors_as_invalid():
            return self._finish(
                task_id,
                attempt,
                status=Status.SUCCEEDED.value,
                result=_jsonb(result_json),
                error=None,
                finished_at=func.now(),
            )

    def fail(self, task_id: uuid.UUID, attempt: int, error: dict, status: Status) -> bool:
        """Record a failed attempt: ``queued`` again (retry) or ``failed`` (last attempt)."""
        return self._finish(
            task_id,
            attempt,
            status=status.value,
            error=error,
            finished_at=func.now() if status is Status.FAILED else None,
        )

    def extend_lease(self, task_id: uuid.UUID, seconds: float) -> bool:
        """Keep a running task's claim alive (the Celery lane's heartbeat)."""
        stmt = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == Status.RUNNING.value)
            .values(lease_until=func.now() + literal(timedelta(seconds=seconds), Interval))
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def release(self, task_id: uuid.UUID, attempt: int) -> bool:
        """Give back a claim that never ran (the invocation ran out of time before it started)."""
        return self._finish(
            task_id, attempt, status=Status.QUEUED.value, attempts=tasks.c.attempts - 1
        )

    def requeue_unstarted(self, task_id: uuid.UUID) -> bool:
        """A dead message whose task never got an attempt goes back to ``pending``.

        Its receives were spent without the task running (Postgres was down at every delivery,
        or invocations ran out of time first), so failing it would fail a task that never ran;
        the reconciler sends it again.
        """
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_([s.value for s in CLAIMABLE]),
                tasks.c.attempts == 0,
            )
            .values(status=Status.PENDING.value, updated_at=func.now())
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def mark_dead(self, task_id: uuid.UUID, error: dict) -> str | None:
        """A task whose message reached a dead-letter queue: ``failed``, keeping its last error.
        Returns the task's lane, or None when nothing was marked.

        A task running under a live lease is spared: the dead message was a duplicate delivery
        that found it busy, and the attempt holding the claim decides the outcome.
        """
        live = and_(tasks.c.status == Status.RUNNING.value, tasks.c.lease_until >= func.now())
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.not_in([s.value for s in TERMINAL]),
                ~live,
            )
            .values(
                status=Status.FAILED.value,
                error=func.coalesce(tasks.c.error, literal(error, JSONB)),
                lease_until=None,
                finished_at=func.now(),
                updated_at=func.now(),
            )
            .returning(tasks.c.lane)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).scalar_one_or_none()

    def requeue_failed(self, task_id: uuid.UUID) -> TaskRecord:
        """``failed → pending`` with a fresh attempt count; the caller sends the message."""
        stmt = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == Status.FAILED.value)
            .values(
                status=Status.PENDING.value,
                attempts=0,
                result=None,
                error=None,
                finished_at=None,
                updated_at=func.now(),
            )
            .returning(*_PUBLIC)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                current = conn.execute(
                    select(tasks.c.status).where(tasks.c.id == task_id)
                ).scalar_one_or_none()
                if current is None:
                    raise TaskNotFound(f"no task with id {task_id}")
                raise InvalidTransition(f"task {task_id} is {current}, only failed tasks retry")
        return TaskRecord.from_row(row)

    def claim_stale_pending(self, grace_seconds: float, limit: int = 100) -> list[TaskRecord]:
        """Tasks whose message may be missing, taken so no other reconciler sends them.

        Two kinds: ``pending`` past the grace period (the send failed, or the producer died
        after the commit), and ``running`` with a lease expired past the grace period (the
        consumer died, and its message may be gone too, e.g. dead-lettered as a duplicate).
        ``FOR UPDATE SKIP LOCKED`` lets reconcilers run side by side; touching ``updated_at``
        keeps the next run from resending before another grace period has passed.
        """
        grace = func.now() - literal(timedelta(seconds=grace_seconds), Interval)
        stale = (
            select(tasks.c.id)
            .where(
                or_(
                    and_(tasks.c.status == Status.PENDING.value, tasks.c.updated_at < grace),
                    and_(tasks.c.status == Status.RUNNING.value, tasks.c.lease_until < grace),
                ),
                tasks.c.updated_at < grace,
            )
            .order_by(tasks.c.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(tasks)
            .where(tasks.c.id.in_(stale))
            .values(updated_at=func.now())
            .returning(*_PUBLIC)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]
