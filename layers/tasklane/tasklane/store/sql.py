"""The pieces of SQL every part of the store shares: the columns a task is read with, the
array parameters of bulk statements, JSON text cast in SQL, and how database errors become
tasklane's (an outage a 503, a value Postgres refuses a 400).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    Interval,
    SmallInteger,
    Text,
    TypeDecorator,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from tasklane.errors import InvalidRequest, StoreUnavailable
from tasklane.lifecycle import Status
from tasklane.store.tables import HISTORY_KEPT, tasks

PUBLIC = (
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
    tasks.c.retry_at,
    tasks.c.unique_key,
    tasks.c.concurrency_key,
    tasks.c.waiting_on,
    tasks.c.priority,
    # the stored (compressed) size: read from the value's header, never the payload itself
    func.pg_column_size(tasks.c.payload).label("payload_bytes"),
)


#: A task read alone (``GET /tasks/{id}``): with its history of attempts, which reads of many
#: tasks (and the RETURNING of bulk writes) leave out: it may be tens of kilobytes.
WITH_HISTORY = (*PUBLIC, tasks.c.history)


#: A retried task's new life: ``pending`` now, its attempts counted afresh (its ``history``
#: of attempts is kept: what failed before is what the retry is about).
FRESH_LIFE = {
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
    "started_at": None,
    "attempt_started_at": None,
    "retry_at": None,
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


RERUNNABLE = or_(tasks.c.error.is_(None), tasks.c.error["type"].astext != INPUT_TOO_LARGE)


IDS = cast(bindparam("ids"), ARRAY(UUID(as_uuid=True)))


NAMES = cast(bindparam("names"), ARRAY(Text))


LANES = cast(bindparam("lanes"), ARRAY(Text))


MAX_ATTEMPTS = cast(bindparam("max_attempts"), ARRAY(Integer))


RUN_ATS = cast(bindparam("run_ats"), ARRAY(DateTime(timezone=True)))


STATUSES = cast(bindparam("statuses"), ARRAY(Text))


#: Each task's priority (null: 0), as inserts write them.
PRIORITY_VALUES = cast(bindparam("priorities"), ARRAY(SmallInteger))


#: Who submits a batch (one caller a statement).
OWNER = bindparam("owner", type_=Text)


#: A task due later than this (SQS's longest message delay) is stored ``scheduled``.
NEAR = bindparam("near", type_=Interval)


class JsonText(TypeDecorator):
    """JSON the caller has already serialized: bound as text and cast to jsonb in SQL, so a
    multi-megabyte payload is serialized once, and statements stay cacheable."""

    impl = Text
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, JSONB)


@contextlib.contextmanager
def unavailable_as_error() -> Iterator[None]:
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
    except OSError as exc:
        # pg8000 lets a socket's own error through unwrapped (a timeout, a reset connection
        # from a killed backend): the statement's fate is unknown, as with a lost reply, and
        # every write is fenced on its delivery's token, so it is safe to make again.
        raise StoreUnavailable("the database connection was lost, try again later") from exc


#: A deadlock, a serialization failure: Postgres rolled the transaction back, and it may be
#: made again as it was (every write is conditional, and fenced on its delivery's token).
RETRYABLE = {"40P01", "40001"}


def sqlstate(exc: sa_exc.DBAPIError) -> str:
    """The SQLSTATE of a database error (pg8000 keeps it in its first argument)."""
    args = getattr(exc.orig, "args", None)
    detail = args[0] if args else None
    return detail.get("C", "") if isinstance(detail, dict) else ""


@contextlib.contextmanager
def data_errors_as_invalid() -> Iterator[None]:
    """A value Postgres cannot store (SQLSTATE class 22, e.g. \\u0000 in jsonb) is the client's."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if sqlstate(exc).startswith("22"):
            message = exc.orig.args[0].get("M", "invalid value")  # type: ignore[union-attr]
            raise InvalidRequest(f"payload cannot be stored: {message}") from exc
        raise


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def jsonb_of(text: str | None) -> Any:
    return None if text is None else literal(text, JsonText())


def status_is(status: Status) -> Any:
    """``status = '<status>'`` with the value in the SQL text, not a parameter: a partial index
    of live tasks (migration 0009) serves a query only if the planner sees which status it
    asks for, and a prepared statement's generic plan would not."""
    return tasks.c.status == literal_column(f"'{status.value}'")


#: A listing's columns: ``PUBLIC`` without the result, and the error without its traceback.
LISTED = tuple(
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
    for c in PUBLIC
)


def taken(rows: Any) -> Any:
    """The rows a ``SELECT … LIMIT … FOR UPDATE SKIP LOCKED`` takes, chosen once, for an
    ``UPDATE … FROM`` them. As ``id IN (subquery)`` the planner may run the subquery again for
    every candidate row (a nested-loop semi-join), each run locking and returning different
    rows: the limit then bounds nothing (five tasks taken with a limit of three)."""
    return rows.cte("taken").prefix_with("MATERIALIZED", dialect="postgresql")


def cancelled_unrun(message: str) -> dict[str, Any]:
    """The values that end a task that never ran as ``cancelled``, saying why."""
    return {
        "status": Status.CANCELLED.value,
        "error": literal({"type": "Cancelled", "message": message}, JSONB),
        "cancel_requested_at": func.now(),
        "finished_at": func.now(),
        "updated_at": func.now(),
    }


# -- a task's history of attempts (tasks.history) ------------------------------------------
def _key(name: str) -> Any:
    return literal_column(f"'{name}'")  # a constant key of jsonb_build_object (not a parameter)


def history_with(entry: Any) -> Any:
    """The row's history with ``entry`` last, the oldest dropped past :data:`HISTORY_KEPT`.
    (On the hot path: the old array's length is read once, and the array is built once.)"""
    kept = case(
        (
            func.coalesce(func.jsonb_array_length(tasks.c.history), 0) >= HISTORY_KEPT,
            tasks.c.history.op("-", return_type=JSONB)(literal_column("0")),
        ),
        else_=func.coalesce(tasks.c.history, literal_column("'[]'::jsonb")),
    )
    return kept.op("||", return_type=JSONB)(func.jsonb_build_array(entry))


def lost_attempt() -> Any:
    """The history of a running row whose run is over without an outcome of its own (its lease
    ran out: its process died): that attempt, ``lost``. Only for a row that is ``running``."""
    return history_with(attempt_entry(literal_column("'lost'")))


def attempt_entry(outcome: Any, extra: Any = None) -> Any:
    """One attempt's history entry, as it ends: its number, start, end and outcome (``extra``,
    a jsonb parameter: its error and where it ran)."""
    known = func.jsonb_build_object(
        _key("attempt"),
        tasks.c.attempts,
        _key("started_at"),
        tasks.c.attempt_started_at,
        _key("finished_at"),
        func.now(),
        _key("outcome"),
        outcome,
    )
    return known if extra is None else extra.op("||", return_type=JSONB)(known)
