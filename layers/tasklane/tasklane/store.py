"""The store: the ``tasks`` table and the conditional updates that move a task through its life.

Postgres is the record of every task. Each transition is a single conditional ``UPDATE``, so a
race between two deliveries, two reconcilers or a retry and a consumer is decided by the database,
not by timing: the status (and, for a running task, the attempt number that holds the claim) is
part of every ``WHERE``. Payloads and results arrive here already serialized to JSON text and are
cast to ``jsonb`` in SQL, so a multi-megabyte payload is serialized exactly once.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
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
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.database import socket_of
from tasklane.errors import InvalidRequest, InvalidTransition, StoreUnavailable, TaskNotFound
from tasklane.lifecycle import CLAIMABLE, IN_FLIGHT, MAX_BACKOFF_S, TERMINAL, Status
from tasklane.workflows import payload_json

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
    #: Who submitted it (:mod:`tasklane.callers`); callers see only their own. '' : no one
    #: in particular (the Python API without an owner), seen by operators only.
    Column("owner", Text, nullable=False, server_default=""),
    #: Unique per owner (ix_tasks_owner_idempotency_key).
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    Column(
        "created_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.statement_timestamp(),
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    #: The delivery holding (or that last held) the claim: ``<SQS message id>#<random>``.
    Column("claimed_by", Text),
    #: Dead letters of the task while it had never run (bounds putting it back to pending).
    Column("dead_letters", Integer, nullable=False, server_default="0"),
    #: When the task is due (eta, countdown); ``scheduled`` until then.
    Column("run_at", DateTime(timezone=True)),
    #: When a running task was asked to stop (it sees it; it then ends ``cancelled``).
    Column("cancel_requested_at", DateTime(timezone=True)),
    #: Not to run after then (a deferred stock message's ``expires``): it ends ``cancelled``.
    Column("expires_at", DateTime(timezone=True)),
    #: Since when consumers meet the task without knowing it (cleared when one claims it).
    Column("unknown_since", DateTime(timezone=True)),
    #: The workflow the task is a step of (:mod:`tasklane.workflows`).
    Column("workflow_id", UUID(as_uuid=True)),
    #: Its place there: ``{"after": [ids], "input": template, "bound": bool, "then": [ids]}``.
    Column("step", JSONB(none_as_null=True)),
    #: A Celery task's meta beyond these columns (:mod:`tasklane.results`): its Celery state,
    #: traceback, children, group and parent, the extended request fields.
    Column("celery", JSONB(none_as_null=True)),
    CheckConstraint(
        "status IN ('waiting', 'pending', 'scheduled', 'queued', 'running', 'succeeded', "
        "'failed', 'cancelled')",
        name="ck_tasks_status",
    ),
    CheckConstraint("lane IN ('lambda', 'celery')", name="ck_tasks_lane"),
)
# Listing newest first (keyset pages on created_at, id), alone or by status or task name.
Index("ix_tasks_created_id", tasks.c.created_at.desc(), tasks.c.id.desc())
# A caller's own tasks (every read of a caller who is not an operator), and its keys.
Index("ix_tasks_owner_created_id", tasks.c.owner, tasks.c.created_at.desc(), tasks.c.id.desc())
Index(
    "ix_tasks_owner_idempotency_key",
    tasks.c.owner,
    tasks.c.idempotency_key,
    unique=True,
    postgresql_where=tasks.c.idempotency_key.is_not(None),
)
Index("ix_tasks_status_created_id", tasks.c.status, tasks.c.created_at.desc(), tasks.c.id.desc())
Index("ix_tasks_task_created_id", tasks.c.task, tasks.c.created_at.desc(), tasks.c.id.desc())
# The live tasks only, in the order the reconciler and the scheduler ask for them (migration
# 0009): runs by lease end (dead consumers), waiting tasks by last write (missing messages),
# scheduled tasks by when they are due.
Index("ix_tasks_running_lease", tasks.c.lease_until, postgresql_where=text("status = 'running'"))
Index(
    "ix_tasks_waiting_updated_at",
    tasks.c.status,
    tasks.c.updated_at,
    postgresql_where=text("status IN ('pending', 'queued')"),
)
Index("ix_tasks_scheduled_run_at", tasks.c.run_at, postgresql_where=text("status = 'scheduled'"))
Index(
    "ix_tasks_finished_at",
    tasks.c.finished_at,
    postgresql_where=tasks.c.finished_at.is_not(None),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    #: Its tasks, in the order of the description (a group's results come in this order).
    Column("members", ARRAY(UUID(as_uuid=True)), nullable=False),
    #: Where its result comes from: a task id, or a list of them, nested as the description.
    Column("output", JSONB, nullable=False),
    Column(
        "created_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.statement_timestamp(),
    ),
    Column("owner", Text, nullable=False, server_default=""),
)

#: Celery's groups and chords (:mod:`tasklane.results`): a group's results, and a chord's
#: fan-in: how many members have ended, counted under a row lock, and when its body was fired.
celery_groups = Table(
    "celery_groups",
    metadata,
    Column("id", Text, primary_key=True),
    Column("result", JSONB, nullable=False),
    Column("chord_size", Integer),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("fired_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
#: The members of a chord whose end was counted: each once, whatever runs report it.
celery_chord_parts = Table(
    "celery_chord_parts",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("member_id", Text, primary_key=True),
)

#: Idempotency keys of requests that create several rows (a batch, a workflow): what each
#: created, by owner, kind ("batch", "workflow") and key.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner", Text, primary_key=True, server_default=""),
    Column("kind", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("expression", Text, nullable=False),
    #: The last tick fired: the next pass fires the ticks after it.
    Column("last_tick", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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
    tasks.c.run_at,
    tasks.c.workflow_id,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.owner,
    # the stored (compressed) size: read from the value's header, never the payload itself
    func.pg_column_size(tasks.c.payload).label("payload_bytes"),
)
#: A retried task's new life: ``pending`` now, its attempts and its past forgotten.
_FRESH_LIFE = {
    "status": Status.PENDING.value,
    "attempts": 0,
    "dead_letters": 0,
    "claimed_by": None,
    "cancel_requested_at": None,
    "unknown_since": None,
    "run_at": None,
    "expires_at": None,
    "result": None,
    "error": None,
    "finished_at": None,
    "updated_at": func.now(),
}
TERMINAL_NAMES = ("succeeded", "failed", "cancelled")
#: A workflow step failed before it ran: the results before it are too large to be its input.
#: Running it again would not change that, so it is not retried.
INPUT_TOO_LARGE = "InputTooLarge"
#: The error of a run asked to stop that ended without its own outcome (its consumer died, its
#: claim was given back, its message dead-lettered).
STOPPED = {"type": "Cancelled", "message": "asked to stop while it ran"}
_RETRYABLE = or_(tasks.c.error.is_(None), tasks.c.error["type"].astext != INPUT_TOO_LARGE)
_IDS = cast(bindparam("ids"), ARRAY(UUID(as_uuid=True)))
_NAMES = cast(bindparam("names"), ARRAY(Text))
_LANES = cast(bindparam("lanes"), ARRAY(Text))
_MAX_ATTEMPTS = cast(bindparam("max_attempts"), ARRAY(Integer))
_RUN_ATS = cast(bindparam("run_ats"), ARRAY(DateTime(timezone=True)))
_STATUSES = cast(bindparam("statuses"), ARRAY(Text))
#: Who submits a batch (one caller a statement).
_OWNER = bindparam("owner", type_=Text)
#: A task due later than this (SQS's longest message delay) is stored ``scheduled``.
_NEAR = bindparam("near", type_=Interval)


class JsonText(TypeDecorator):
    """JSON the caller has already serialized: bound as text and cast to jsonb in SQL, so a
    multi-megabyte payload is serialized once, and statements stay cacheable."""

    impl = Text
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, JSONB)


def _status_for(run_at: Any) -> Any:
    """``scheduled`` for a task due later than a message can be delayed, else ``pending``."""
    return case((run_at > func.now() + _NEAR, Status.SCHEDULED.value), else_=Status.PENDING.value)


def _insert_statement() -> Any:
    """``INSERT … SELECT`` from the arrays ``ids``, ``names``, ``lanes``, ``max_attempts``,
    ``run_ats`` and the JSON array ``payloads``, zipped by position; returns (rows inserted,
    their ``created_at``)."""
    columns = (
        func.unnest(_IDS, _NAMES, _LANES, _MAX_ATTEMPTS, _RUN_ATS)
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
        _OWNER,
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


def _insert_steps_statement() -> Any:
    """A workflow's tasks: as :func:`_insert_statement`, with each task's status and its
    ``step`` (a JSON array ``steps``, zipped by position) and the workflow's id."""
    columns = (
        func.unnest(_IDS, _NAMES, _LANES, _MAX_ATTEMPTS, _STATUSES)
        .table_valued("id", "task", "lane", "max_attempts", "status", with_ordinality="n")
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
        _OWNER,
    ).select_from(
        columns.join(payloads, columns.c.n == payloads.c.n).join(steps, columns.c.n == steps.c.n)
    )
    inserted = (
        insert(tasks)
        .from_select(
            [
                *("id", "task", "lane", "status", "payload", "max_attempts"),
                *("workflow_id", "step", "owner"),
            ],
            rows,
        )
        .returning(tasks.c.created_at)
        .cte("inserted")
    )
    return select(func.count(), func.min(inserted.c.created_at))


_INSERT_STEPS = _insert_steps_statement()


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
    #: When the task is due, if it was asked to run later.
    run_at: datetime | None = None
    #: The workflow it is a step of, if any.
    workflow_id: uuid.UUID | None = None
    #: When its last attempt started, and when it reached a final status.
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The payload's size as stored in Postgres (compressed); None once pruned.
    payload_bytes: int | None = None
    #: Who submitted it ('' : no one in particular).
    owner: str = ""

    @classmethod
    def from_row(cls, row: Any) -> TaskRecord:
        m = row._mapping
        return cls(**{c.name: m[c.name] for c in _PUBLIC} | {"status": Status(m["status"])})


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks to find (each part optional): status, task name, lane, creation window."""

    status: Status | None = None
    task: str | None = None
    lane: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: Only this caller's tasks (None: everyone's, for operators).
    owner: str | None = None

    def conditions(self) -> list[Any]:
        found = []
        if self.owner is not None:
            found.append(tasks.c.owner == self.owner)
        if self.status is not None:
            found.append(tasks.c.status == self.status.value)
        if self.task is not None:
            found.append(tasks.c.task == self.task)
        if self.lane is not None:
            found.append(tasks.c.lane == self.lane)
        if self.created_after is not None:
            found.append(tasks.c.created_at > self.created_after)
        if self.created_before is not None:
            found.append(tasks.c.created_at < self.created_before)
        return found


@dataclass(frozen=True, slots=True)
class NewTask:
    id: uuid.UUID
    task: str
    lane: str
    payload_json: str
    max_attempts: int | None = None
    #: Not to run before then (None: now).
    run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery asking to run task ``task`` on row ``id``.

    ``token`` names the delivery (one receive of one message): ``<message id>#<random>``. The
    claim records it, every later write of the attempt is fenced on it, and a write replayed
    after a lost reply recognises its own committed effect by it.
    """

    id: uuid.UUID
    task: str
    token: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """This delivery holds the task: its attempt ``attempt`` (runs so far, this one included)
    until its lease runs out. The payload is the stored JSON text, loaded when it runs."""

    id: uuid.UUID
    attempt: int
    payload_json: str
    #: Who submitted it: the tasks it submits are that owner's too.
    owner: str = ""


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Why a delivery could not claim: the task's status (None: no such row), its name, and
    when it is due (a message that arrived before ``run_at``)."""

    id: uuid.UUID
    status: Status | None
    task: str | None
    run_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: its error, and whether it may be retried at all (``final``: never, as
    for a payload that cannot be loaded). Otherwise the row's ``max_attempts`` decides."""

    error: dict
    final: bool = False


class Settled(NamedTuple):
    """What recording an outcome did: the task's status (None: the claim was lost), the next
    task's claim when one was asked, and the workflow steps it released (now ``pending``)."""

    status: Status | None
    then: Claimed | NotClaimed | None = None
    released: Sequence[TaskRecord] = ()


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
        if sqlstate(exc) in RETRYABLE:  # rolled back whole: the same write may be made again
            raise StoreUnavailable("the database chose this transaction to roll back") from exc
        raise


#: How much longer than a transactional run's time limit its client waits for the server.
SOCKET_MARGIN_S = 5
#: How much sooner than a transactional run's time limit the server stops its statement.
STATEMENT_MARGIN_MS = 500

#: A deadlock, a serialization failure: Postgres rolled the transaction back, and it may be
#: made again as it was (every write is conditional, and fenced on its delivery's token).
RETRYABLE = {"40P01", "40001"}


def sqlstate(exc: sa_exc.DBAPIError) -> str:
    """The SQLSTATE of a database error (pg8000 keeps it in its first argument)."""
    args = getattr(exc.orig, "args", None)
    detail = args[0] if args else None
    return detail.get("C", "") if isinstance(detail, dict) else ""


@contextlib.contextmanager
def _data_errors_as_invalid() -> Iterator[None]:
    """A value Postgres cannot store (SQLSTATE class 22, e.g. \\u0000 in jsonb) is the client's."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if sqlstate(exc).startswith("22"):
            message = exc.orig.args[0].get("M", "invalid value")  # type: ignore[union-attr]
            raise InvalidRequest(f"payload cannot be stored: {message}") from exc
        raise


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _jsonb(text: str | None) -> Any:
    return None if text is None else literal(text, JsonText())


#: Tries of an idempotent insert whose key's row vanished (pruned) between its statements.
KEY_TRIES = 3


class KeyUse(NamedTuple):
    """An idempotency key's use (:meth:`TaskStore.keyed`): the transaction to create the rows
    in, whether this request is the key's first, and the first request's hash and ids."""

    connection: Connection
    first: bool
    request_hash: str
    ids: list[uuid.UUID]


class TaskStore:
    """Every read and write of the ``tasks`` table. One instance per process; holds no state."""

    def __init__(
        self,
        engine: Engine,
        max_payload_bytes: int = 5 * 1024 * 1024,
        max_result_bytes: int = 1024 * 1024,
    ) -> None:
        self.engine = engine
        #: The largest input a workflow step may be given (``MAX_PAYLOAD_BYTES``).
        self.max_payload_bytes = max_payload_bytes
        #: The largest result a task may record (``MAX_RESULT_BYTES``).
        self.max_result_bytes = max_result_bytes

    # -- submission --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, connection: Connection | None) -> Iterator[Connection]:
        """tasklane's own short transaction, or a savepoint inside the caller's open one (so a
        refused insert leaves the caller's transaction usable)."""
        if connection is None:
            with self.engine.begin() as conn:
                yield conn
        else:
            with connection.begin_nested():
                yield connection

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
            _unavailable_as_error(),
            self._transaction(connection) as conn,
            _data_errors_as_invalid(),
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
                payload=_jsonb(new.payload_json),
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
            .returning(*_PUBLIC, tasks.c.request_hash)
        )
        near = {"near": timedelta(seconds=near_seconds)}
        earlier = select(*_PUBLIC, tasks.c.request_hash).where(
            tasks.c.owner == owner, tasks.c.idempotency_key == key
        )
        with _unavailable_as_error(), self._transaction(connection) as conn:
            # the row a key names may be pruned between the two statements: then the key is
            # free again, and the insert is tried once more
            for _ in range(KEY_TRIES):
                with _data_errors_as_invalid():
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
        with _unavailable_as_error(), self._transaction(connection) as conn:
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

    def get_many(self, ids: Sequence[uuid.UUID]) -> list[TaskRecord]:
        """The tasks of these ids that exist, in the order given."""
        stmt = select(*_PUBLIC).where(tasks.c.id == any_(_IDS))
        with _unavailable_as_error(), self.engine.connect() as conn:
            found = {r.id: TaskRecord.from_row(r) for r in conn.execute(stmt, {"ids": list(ids)})}
        return [found[i] for i in ids if i in found]

    def pending_among(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these tasks exist and are still ``pending`` (committed, not yet sent)."""
        stmt = select(tasks.c.id).where(
            tasks.c.id == any_(_IDS), tasks.c.status == Status.PENDING.value
        )
        with _unavailable_as_error(), self.engine.connect() as conn:
            return set(conn.execute(stmt, {"ids": list(ids)}).scalars())

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
    def end_run(self, task_id: uuid.UUID, token: str, status: Status) -> bool:
        """An adopted Celery task's run has ended (its result, if any, is Celery's backend's
        to store): the row leaves ``running`` while this delivery still holds it."""
        with _unavailable_as_error(), self.engine.begin() as conn:
            ended = conn.execute(
                update(tasks)
                .where(
                    tasks.c.id == task_id,
                    tasks.c.status == Status.RUNNING.value,
                    tasks.c.claimed_by == token,
                )
                .values(
                    status=status.value,
                    lease_until=None,
                    updated_at=func.now(),
                    finished_at=func.now() if status.terminal else None,
                )
            )
        return ended.rowcount == 1

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
        text = _json_text(payload)
        if len(text.encode()) > self.max_payload_bytes:
            raise InvalidRequest(
                f"task arguments are {len(text.encode())} bytes, over {self.max_payload_bytes}"
            )
        values = {
            "task": task,
            "lane": lane,
            "status": Status.QUEUED.value,
            "payload": _jsonb(text),
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
        with _unavailable_as_error(), _data_errors_as_invalid(), self.engine.begin() as conn:
            conn.execute(statement)

    def payload_of(self, task_id: uuid.UUID) -> Any:
        """A task's payload (None: no such task, or its payload was pruned)."""
        with _unavailable_as_error(), self.engine.connect() as conn:
            return conn.execute(select(tasks.c.payload).where(tasks.c.id == task_id)).scalar()

    def mark_celerys(self, task_id: uuid.UUID, connection: Connection | None = None) -> None:
        """Mark a task as a Celery task's (``celery`` not NULL), so Celery's backend records
        its outcome (:mod:`tasklane.results`); in ``connection``'s transaction if given."""
        statement = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.celery.is_(None))
            .values(celery=literal("{}", JsonText()))
        )
        with _unavailable_as_error(), self._transaction(connection) as conn:
            conn.execute(statement)

    def get(self, task_id: uuid.UUID) -> TaskRecord:
        with _unavailable_as_error(), self.engine.connect() as conn:
            row = conn.execute(select(*_PUBLIC).where(tasks.c.id == task_id)).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return TaskRecord.from_row(row)

    def find(
        self, where: TaskFilter, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[TaskRecord]:
        """Tasks matching ``where``, newest first (``created_at``, then ``id``), at most
        ``limit``, from just after ``after`` (the last one of the page before): keyset pages,
        each an index range scan, stable while new tasks arrive (they come before page one)."""
        with _unavailable_as_error(), self.engine.connect() as conn:
            return [
                TaskRecord.from_row(r) for r in conn.execute(find_statement(where, limit, after))
            ]

    # -- execution ---------------------------------------------------------------------------
    def claim(self, claim: Claim, lease_seconds: float) -> Claimed | NotClaimed:
        """Claim a task for one delivery, in one round trip; the attempt counts a run.

        Claimable: ``pending``/``queued`` and due, or ``running`` with an expired lease (its
        consumer died), and the message names the row's task. A claim this delivery already
        holds is returned again without counting (its commit's reply was lost).
        """
        with _unavailable_as_error(), self.engine.begin() as conn:
            return _claim_of(claim.id, conn.execute(select_claim(claim, lease_seconds)).one())

    @contextlib.contextmanager
    def transaction(self, limit_s: float | None = None) -> Iterator[Connection]:
        """A transaction of tasklane's engine, for a transactional task's run and outcome.

        ``limit_s``, the run's time limit: the server stops any statement of the run that
        would outlast it (``statement_timeout``, a little before the run's own alarm, so the
        statement ends with an error and the connection stays in step), and the client waits
        for the server that long and ``SOCKET_MARGIN_S`` more, instead of the engine's short
        socket timeout (made for the store's own quick statements). A statement the client
        abandons all the same (the alarm struck in a later statement) is cancelled by the
        server once it sees the connection gone (``client_connection_check_interval``)."""
        with _unavailable_as_error(), self.engine.begin() as conn:
            sock = socket_of(conn.connection.dbapi_connection)
            before = sock.gettimeout() if sock is not None else None
            if limit_s:
                ms = max(100, math.ceil(limit_s * 1000) - STATEMENT_MARGIN_MS)
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
            if (conn.dialect.server_version_info or (0,)) >= (14,):
                conn.exec_driver_sql("SET LOCAL client_connection_check_interval = 1000")
            if sock is not None:
                sock.settimeout(limit_s + SOCKET_MARGIN_S if limit_s else None)
            try:
                yield conn
            finally:
                if sock is not None:
                    sock.settimeout(before)

    def outcome_of(self, task_id: uuid.UUID, token: str) -> Status | None:
        """The task's status if delivery ``token`` was the last to hold it (else None)."""
        stmt = select(tasks.c.status).where(tasks.c.id == task_id, tasks.c.claimed_by == token)
        with _unavailable_as_error(), self.engine.connect() as conn:
            status = conn.execute(stmt).scalar_one_or_none()
        return Status(status) if status else None

    def settle(
        self,
        task_id: uuid.UUID,
        token: str,
        outcome: str | Failure,
        then: Claim | None = None,
        lease_seconds: float = 0,
        connection: Connection | None = None,
    ) -> Settled:
        """Record an attempt's outcome (``outcome``: the result's JSON text, or a
        :class:`Failure`) if delivery ``token`` still holds the claim; and, in the same round
        trip, claim ``then``, the next task its consumer will run.

        Returns the task's status after the write (None: the claim was lost, nothing written),
        ``then``'s claim, and the workflow steps this success released (:meth:`_release`), in
        the same transaction, for the caller to send. A failure leaves the task ``queued`` for
        a retry, or ``failed`` on its last attempt (``max_attempts``) or when final. Replaying
        the same write after a lost reply finds the delivery's own committed outcome and
        returns it again.
        """
        settled = _settle_update(task_id, token, outcome).returning(
            tasks.c.status, tasks.c.step["then"].label("then")
        )
        if connection is not None:  # inside a transactional run: commits with its writes
            with _data_errors_as_invalid():
                row = connection.execute(settled).first()
            return Settled(*self._after_settle(connection, row.status if row else None, row))
        with _unavailable_as_error(), self.engine.begin() as conn, _data_errors_as_invalid():
            if then is None:
                row = conn.execute(settled).first()
                return Settled(*self._after_settle(conn, row.status if row else None, row))
            cte = settled.cte("settled")
            stmt = select_claim(
                then,
                lease_seconds,
                select(cte.c.status).scalar_subquery().label("settled"),
                select(cte.c.then).scalar_subquery().label("then"),
            )
            row = conn.execute(stmt).one()
            status, _, released = self._after_settle(conn, row.settled, row)
            return Settled(status, _claim_of(then.id, row), released)

    def _after_settle(
        self, conn: Connection, status: str | None, row: Any
    ) -> tuple[Status | None, None, Sequence[TaskRecord]]:
        if status != Status.SUCCEEDED.value or row is None or not row.then:
            return (Status(status) if status else None), None, []
        return Status.SUCCEEDED, None, self._release(conn, row.then)

    # -- workflows ---------------------------------------------------------------------------
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
            "workflow": workflow_id,
            "payloads": f"[{','.join(t.payload_json for t in new)}]",
            "steps": _json_text(list(steps)),
            "owner": owner,
        }
        workflow_row = insert(workflows).values(
            id=workflow_id, members=[t.id for t in new], output=literal(output, JSONB), owner=owner
        )
        with (
            _unavailable_as_error(),
            self._transaction(connection) as conn,
            _data_errors_as_invalid(),
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
                .where(tasks.c.id == any_(_IDS), tasks.c.status == Status.WAITING.value)
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
                tasks.c.id == any_(_IDS), ~unfinished
            ),
            {"ids": list(waiting)},
        ).all()
        if not ready:
            return []
        sources = sorted({uuid.UUID(i) for r in ready for i in r.step["after"]})
        sizes = dict(
            conn.execute(
                select(cast(tasks.c.id, Text), func.octet_length(cast(tasks.c.result, Text))).where(
                    tasks.c.id == any_(_IDS)
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
                .where(tasks.c.id == any_(_IDS), tasks.c.status == Status.WAITING.value)
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
                    tasks.c.id == any_(_IDS)
                ),
                {"ids": sources},
            ).all()
        )
        payloads = (
            func.unnest(_IDS, cast(bindparam("texts"), ARRAY(Text)))
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
            .returning(*_PUBLIC),
            {
                "ids": [r.id for r in ready],
                "texts": [payload_json(r.step, r.own, results) for r in ready],
            },
        )
        return [TaskRecord.from_row(r) for r in released]

    def workflow(self, workflow_id: uuid.UUID) -> tuple[Any, list[TaskRecord]]:
        """A workflow's row and its tasks, in member order, as listings have them (without
        results: :meth:`results_of`); :class:`TaskNotFound` if none."""
        with _unavailable_as_error(), self.engine.connect() as conn:
            row = conn.execute(select(workflows).where(workflows.c.id == workflow_id)).first()
            if row is None:
                raise TaskNotFound(f"no workflow with id {workflow_id}")
            found = {
                r.id: TaskRecord.from_row(r)
                for r in conn.execute(
                    select(*_LISTED).where(tasks.c.id == any_(_IDS)), {"ids": row.members}
                )
            }
        return row, [found[i] for i in row.members]

    def results_of(
        self, ids: Sequence[uuid.UUID], max_bytes: int | None = None
    ) -> tuple[dict[uuid.UUID, Any] | None, int]:
        """These tasks' results and their size together (as JSON text, in bytes); the
        results are not read (None) when that is over ``max_bytes``."""
        params = {"ids": list(ids)}
        size = select(
            func.coalesce(func.sum(func.octet_length(cast(tasks.c.result, Text))), 0)
        ).where(tasks.c.id == any_(_IDS))
        with _unavailable_as_error(), self.engine.connect() as conn:
            total = int(conn.execute(size, params).scalar_one())
            if max_bytes is not None and total > max_bytes:
                return None, total
            rows = conn.execute(
                select(tasks.c.id, tasks.c.result).where(tasks.c.id == any_(_IDS)), params
            )
            return {r.id: r.result for r in rows}, total

    def cancel_workflow(self, workflow_id: uuid.UUID) -> int:
        """Cancel what has not run of a workflow: its waiting tasks now, its running ones asked
        to stop. Returns how many tasks were cancelled or asked."""
        with _unavailable_as_error(), self.engine.begin() as conn:
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
        error = {"type": "Cancelled", "message": "its workflow was cancelled"}
        waiting = [Status.WAITING, Status.PENDING, Status.SCHEDULED, Status.QUEUED]
        cancelled = (
            update(tasks)
            .where(tasks.c.id.in_(members), tasks.c.status.in_([s.value for s in waiting]))
            .values(
                status=Status.CANCELLED.value,
                error=literal(error, JSONB),
                cancel_requested_at=func.now(),
                finished_at=func.now(),
                updated_at=func.now(),
            )
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

    def release(self, task_id: uuid.UUID, token: str) -> bool:
        """Give back a claim whose run was cut short by the platform, not the task (a worker's
        broker connection lost, a transactional run's deadlock): ``queued`` again, and the run
        does not count; but a run asked to stop is over: ``cancelled``, never run again."""
        asked = tasks.c.cancel_requested_at.is_not(None)
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.claimed_by == token,
                tasks.c.status == Status.RUNNING.value,
            )
            .values(
                status=case((asked, Status.CANCELLED.value), else_=Status.QUEUED.value),
                error=case((asked, literal(STOPPED, JSONB)), else_=tasks.c.error),
                attempts=tasks.c.attempts - 1,
                lease_until=None,
                finished_at=case((asked, func.now()), else_=None),
                updated_at=func.now(),
            )
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def extend_lease(self, task_id: uuid.UUID, token: str, seconds: float) -> bool:
        """Keep a running attempt's claim alive (the Celery lane's heartbeat)."""
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.claimed_by == token,
                tasks.c.status == Status.RUNNING.value,
            )
            .values(lease_until=func.now() + literal(timedelta(seconds=seconds), Interval))
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def mark_dead(
        self, task_id: uuid.UUID, message_id: str, error: dict, max_requeues: int
    ) -> tuple[Status, str] | None:
        """A message that SQS moved to a dead-letter queue: what it means for its task.

        - It carried the task's latest claim: the attempts it carried are over, the task is
          ``failed`` (keeping its last error).
        - No delivery ever claimed the task (every receive found Postgres down, or no consumer
          that knew the task): it never ran, so it goes back to ``pending`` for the
          reconciler, at most ``max_requeues`` times; then it is ``failed``, saying why.
        - Another message holds or held the claim: this one was a duplicate, and the task is
          left to that message's delivery. So is a task running under a live lease.
        - A task asked to stop ends ``cancelled`` rather than ``failed``: no retry of failed
          tasks takes it.

        Returns the status written and the task's lane (None: nothing changed).
        """
        never_claimed = tasks.c.claimed_by.is_(None)
        carried_it = func.split_part(tasks.c.claimed_by, "#", 1) == message_id
        requeue = and_(never_claimed, tasks.c.dead_letters + 1 < max_requeues)
        never_ran = {
            "type": "DeadLetter",
            "message": f"the task never ran: its messages reached the dead-letter queue "
            f"{max_requeues} times (no consumer could claim it)",
        }
        live = and_(tasks.c.status == Status.RUNNING.value, tasks.c.lease_until >= func.now())
        asked = tasks.c.cancel_requested_at.is_not(None)
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_([s.value for s in IN_FLIGHT]),
                ~live,
                or_(never_claimed, carried_it),
            )
            .values(
                dead_letters=tasks.c.dead_letters + case((never_claimed, 1), else_=0),
                status=case(
                    (asked, Status.CANCELLED.value),
                    (requeue, Status.PENDING.value),
                    else_=Status.FAILED.value,
                ),
                error=case(
                    (asked, literal(STOPPED, JSONB)),
                    (requeue, tasks.c.error),
                    (never_claimed, literal(never_ran, JSONB)),
                    else_=func.coalesce(tasks.c.error, literal(error, JSONB)),
                ),
                lease_until=None,
                finished_at=case((and_(requeue, ~asked), None), else_=func.now()),
                updated_at=func.now(),
            )
            .returning(tasks.c.status, tasks.c.lane)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return (Status(row.status), row.lane) if row else None

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
            .returning(*_PUBLIC)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
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
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def cancel(self, task_id: uuid.UUID) -> TaskRecord:
        """Cancel a task: one waiting to run (``pending``, ``scheduled``, ``queued``) is
        ``cancelled`` now, and its message is acknowledged without running when it comes; a
        ``running`` one is asked to stop (it ends ``cancelled`` when it does). A finished task
        is :class:`InvalidTransition`; none, :class:`TaskNotFound`."""
        waiting = [
            s.value for s in (Status.WAITING, Status.PENDING, Status.SCHEDULED, Status.QUEUED)
        ]
        error = {"type": "Cancelled", "message": "cancelled before it ran"}
        cancelled = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status.in_(waiting))
            .values(
                status=Status.CANCELLED.value,
                error=literal(error, JSONB),
                cancel_requested_at=func.now(),
                finished_at=func.now(),
                updated_at=func.now(),
            )
            .returning(*_PUBLIC)
        )
        asked = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == Status.RUNNING.value)
            .values(cancel_requested_at=func.coalesce(tasks.c.cancel_requested_at, func.now()))
            .returning(*_PUBLIC)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            member = conn.execute(
                select(tasks.c.workflow_id).where(
                    tasks.c.id == task_id, tasks.c.status.in_([*waiting, Status.RUNNING.value])
                )
            ).scalar_one_or_none()
            if member is not None:  # a step: its workflow cannot go on without it, all at once
                self._cancel_members(conn, member)
                row = conn.execute(select(*_PUBLIC).where(tasks.c.id == task_id)).first()
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
        with _unavailable_as_error(), self.engine.begin() as conn:
            status = conn.execute(stmt).scalar_one_or_none()
        return Status(status) if status else None

    def cancel_requested(self, task_id: uuid.UUID) -> bool:
        """Whether a task was asked to stop (read now: a running task polls it)."""
        stmt = select(tasks.c.cancel_requested_at.is_not(None)).where(tasks.c.id == task_id)
        with _unavailable_as_error(), self.engine.connect() as conn:
            return bool(conn.execute(stmt).scalar_one_or_none())

    def claim_due(self, horizon_seconds: float, limit: int = 100) -> list[TaskRecord]:
        """``scheduled`` tasks due within ``horizon_seconds``, now ``pending`` for the caller to
        send with the delay left. ``FOR UPDATE SKIP LOCKED``: schedulers side by side send each
        task once."""
        horizon = func.now() + literal(timedelta(seconds=horizon_seconds), Interval)
        due = (
            select(tasks.c.id)
            .where(_status_is(Status.SCHEDULED), tasks.c.run_at <= horizon)
            .order_by(tasks.c.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        due = _taken(due)
        stmt = (
            update(tasks)
            .where(tasks.c.id == due.c.id)
            .values(status=Status.PENDING.value, updated_at=func.now())
            .returning(*_PUBLIC)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]

    # -- periodic schedules ------------------------------------------------------------------
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
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).scalar_one()

    def advance_schedule(self, name: str, seen: datetime, last_tick: datetime) -> bool:
        """Record ``last_tick`` as fired, if no other pass moved the schedule since ``seen``."""
        stmt = (
            update(schedules)
            .where(schedules.c.name == name, schedules.c.last_tick == seen)
            .values(last_tick=last_tick, updated_at=func.now())
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def schedules(self) -> list[Any]:
        with _unavailable_as_error(), self.engine.connect() as conn:
            return list(conn.execute(select(schedules).order_by(schedules.c.name)))

    def requeue_failed(self, task_id: uuid.UUID) -> TaskRecord:
        """``failed → pending``, a new life, now: attempts and dead letters count from zero, no
        delivery holds it, and no ``run_at`` holds it back; the caller sends the message."""
        stmt = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == Status.FAILED.value, _RETRYABLE)
            .values(**_FRESH_LIFE)
            .returning(*_PUBLIC)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
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
            .where(*failed.conditions(), _RETRYABLE, tasks.c.cancel_requested_at.is_(None))
            .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        chosen = _taken(chosen)
        stmt = (
            update(tasks)
            .where(tasks.c.id == chosen.c.id, tasks.c.status == Status.FAILED.value)
            .values(**_FRESH_LIFE)
            .returning(*_PUBLIC)
        )
        more = (
            select(tasks.c.id)
            .where(*failed.conditions(), _RETRYABLE, tasks.c.cancel_requested_at.is_(None))
            .limit(1)
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            records = [TaskRecord.from_row(r) for r in conn.execute(stmt)]
            remaining = conn.execute(more).first() is not None
        return records, remaining

    def stats(self, owner: str | None = None) -> dict[str, Any]:
        """Counts by status and lane, the oldest queued task's age per lane (seconds), and
        tasks finished per minute over the last 15 minutes (oldest minute first): of
        ``owner``'s tasks, or of all (None)."""
        mine = [] if owner is None else [tasks.c.owner == owner]
        counts = (
            select(tasks.c.status, tasks.c.lane, func.count())
            .where(*mine)
            .group_by(tasks.c.status, tasks.c.lane)
        )
        oldest = (
            select(tasks.c.lane, func.extract("epoch", func.now() - func.min(tasks.c.created_at)))
            .where(tasks.c.status == Status.QUEUED.value, *mine)
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
        with _unavailable_as_error(), self.engine.connect() as conn:
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
        have finished before the cut, with them. In batches of ``batch``, each its own short
        transaction (``SKIP LOCKED``: consumers and other prunes are never waited for).
        ``dry_run``: count only. Returns what was (or would be) removed."""
        terminal = [s.value for s in TERMINAL]
        old = and_(tasks.c.status.in_(terminal), tasks.c.finished_at < finished_before)
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
        with _unavailable_as_error():
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
            chosen = _taken(
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
        chosen = _taken(ids.limit(batch).with_for_update(skip_locked=True))
        return delete(table).where(table.c.id == chosen.c.id)

    def claim_stale(
        self,
        grace_seconds: float,
        stranded_seconds: float,
        quiet_lanes: Sequence[str] = (),
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

        ``FOR UPDATE SKIP LOCKED`` lets reconcilers run side by side; touching ``updated_at``
        keeps the next run from resending before another grace period has passed.
        """
        grace = func.now() - literal(timedelta(seconds=grace_seconds), Interval)
        stranded = func.now() - literal(
            timedelta(seconds=stranded_seconds + MAX_BACKOFF_S), Interval
        )
        stale = (
            select(tasks.c.id)
            .where(
                or_(
                    and_(_status_is(Status.PENDING), tasks.c.updated_at < grace),
                    and_(
                        _status_is(Status.RUNNING),
                        tasks.c.lease_until < grace,
                        or_(tasks.c.lane.in_(list(quiet_lanes)), tasks.c.lease_until < stranded),
                    ),
                    and_(
                        _status_is(Status.QUEUED),
                        tasks.c.updated_at < stranded,
                        tasks.c.lane.in_(list(quiet_lanes)),
                        or_(tasks.c.run_at.is_(None), tasks.c.run_at < grace),
                    ),
                ),
                tasks.c.updated_at < grace,
            )
            .order_by(tasks.c.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stale = _taken(stale)
        stmt = (
            update(tasks)
            .where(tasks.c.id == stale.c.id)
            .values(updated_at=func.now())
            .returning(*_PUBLIC)
        )
        # a run asked to stop whose consumer died is over: cancelled, never sent again
        ended = (
            update(tasks)
            .where(
                _status_is(Status.RUNNING),
                tasks.c.cancel_requested_at.is_not(None),
                tasks.c.lease_until < grace,
            )
            .values(
                status=Status.CANCELLED.value,
                error=func.coalesce(tasks.c.error, literal(STOPPED, JSONB)),
                lease_until=None,
                finished_at=func.now(),
                updated_at=func.now(),
            )
        )
        with _unavailable_as_error(), self.engine.begin() as conn:
            conn.execute(ended)
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]


def _status_is(status: Status) -> Any:
    """``status = '<status>'`` with the value in the SQL text, not a parameter: a partial index
    of live tasks (migration 0009) serves a query only if the planner sees which status it
    asks for, and a prepared statement's generic plan would not."""
    return tasks.c.status == literal_column(f"'{status.value}'")


def find_statement(
    where: TaskFilter, limit: int, after: tuple[datetime, uuid.UUID] | None = None
) -> Any:
    """The query of :meth:`TaskStore.find` (the tests read its plan): summaries, without
    results or tracebacks (a page of 500 tasks must fit in a response whatever they hold)."""
    stmt = (
        select(*_LISTED)
        .where(*where.conditions())
        .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(tuple_(tasks.c.created_at, tasks.c.id) < tuple_(*after))
    return stmt


#: A listing's columns: ``_PUBLIC`` without the result, and the error without its traceback.
_LISTED = tuple(
    literal(None, JSONB).label("result")
    if c is tasks.c.result
    else case(
        (
            func.jsonb_typeof(tasks.c.error) == "object",
            tasks.c.error.op("-", return_type=JSONB)(literal("traceback")),
        ),
        else_=tasks.c.error,
    ).label("error")
    if c is tasks.c.error
    else c
    for c in _PUBLIC
)


def _taken(rows: Any) -> Any:
    """The rows a ``SELECT … LIMIT … FOR UPDATE SKIP LOCKED`` takes, chosen once, for an
    ``UPDATE … FROM`` them. As ``id IN (subquery)`` the planner may run the subquery again for
    every candidate row (a nested-loop semi-join), each run locking and returning different
    rows: the limit then bounds nothing (five tasks taken with a limit of three)."""
    return rows.cte("taken").prefix_with("MATERIALIZED", dialect="postgresql")


def _due() -> Any:
    """Due, and not expired: a claim takes neither an early task nor an expired one."""
    return and_(
        or_(tasks.c.run_at.is_(None), tasks.c.run_at <= func.now()),
        or_(tasks.c.expires_at.is_(None), tasks.c.expires_at > func.now()),
    )


def select_claim(claim: Claim, lease_seconds: float, *riders: Any) -> Any:
    """One statement that claims ``claim`` and says why not when it cannot: the claim's
    attempt and payload, and the row's status, task and ``run_at`` as they were before it.
    ``riders``, labelled scalar subqueries over an outcome's update, come along in the same
    round trip.
    """
    token = literal(claim.token, Text)
    claimed = (
        update(tasks)
        .where(
            tasks.c.id == claim.id,
            tasks.c.task == claim.task,
            or_(
                and_(tasks.c.status.in_([s.value for s in CLAIMABLE]), _due()),
                and_(
                    tasks.c.status == Status.RUNNING.value,
                    or_(
                        and_(
                            tasks.c.lease_until < func.now(),
                            tasks.c.cancel_requested_at.is_(None),
                        ),
                        tasks.c.claimed_by == token,
                    ),
                ),
            ),
        )
        .values(
            status=Status.RUNNING.value,
            attempts=tasks.c.attempts + case((tasks.c.claimed_by == token, 0), else_=1),
            claimed_by=token,
            unknown_since=None,
            lease_until=func.now() + literal(timedelta(seconds=lease_seconds), Interval),
            started_at=func.coalesce(tasks.c.started_at, func.now()),
            updated_at=func.now(),
        )
        .returning(
            tasks.c.id,
            tasks.c.attempts,
            cast(tasks.c.payload, Text).label("payload"),
            tasks.c.owner,
        )
        .cte("claimed")
    )
    asked = select(literal(claim.id, UUID(as_uuid=True)).label("id")).subquery("asked")
    before = tasks.alias("before")
    columns = [
        claimed.c.attempts,
        claimed.c.payload,
        claimed.c.owner,
        before.c.status,
        before.c.task,
        before.c.run_at,
        before.c.expires_at,
    ]
    return select(*riders, *columns).select_from(
        asked.outerjoin(claimed, claimed.c.id == asked.c.id).outerjoin(
            before, before.c.id == asked.c.id
        )
    )


def _claim_of(task_id: uuid.UUID, row: Any) -> Claimed | NotClaimed:
    if row.attempts is not None:
        return Claimed(task_id, row.attempts, row.payload, row.owner)
    return NotClaimed(
        task_id, Status(row.status) if row.status else None, row.task, row.run_at, row.expires_at
    )


def _settle_update(task_id: uuid.UUID, token: str, outcome: str | Failure) -> Any:
    """The conditional update recording one attempt's outcome (see :meth:`TaskStore.settle`)."""
    mine = and_(tasks.c.id == task_id, tasks.c.claimed_by == token)
    running = tasks.c.status == Status.RUNNING.value
    if isinstance(outcome, Failure):
        error = literal(outcome.error, JSONB)
        last = or_(
            literal(outcome.final),
            and_(tasks.c.max_attempts.is_not(None), tasks.c.attempts >= tasks.c.max_attempts),
        )
        asked = tasks.c.cancel_requested_at.is_not(None)  # it stopped when asked
        replayed = and_(
            tasks.c.status.in_([Status.QUEUED.value, Status.FAILED.value, Status.CANCELLED.value]),
            tasks.c.error == error,
        )
        return (
            update(tasks)
            .where(mine, or_(running, replayed))
            .values(
                status=case(
                    (asked, Status.CANCELLED.value),
                    (last, Status.FAILED.value),
                    else_=Status.QUEUED.value,
                ),
                error=error,
                lease_until=None,
                finished_at=case((or_(asked, last), func.now()), else_=None),
                updated_at=func.now(),
            )
        )
    return (
        update(tasks)
        .where(mine, tasks.c.status.in_([Status.RUNNING.value, Status.SUCCEEDED.value]))
        .values(
            status=Status.SUCCEEDED.value,
            result=literal(outcome, JsonText()),
            error=None,
            lease_until=None,
            finished_at=func.coalesce(tasks.c.finished_at, func.now()),
            updated_at=func.now(),
        )
    )
