"""Messages sent after the caller's commit: tasks enqueued inside an application's transaction.

``submit(..., connection=conn)`` writes the task's row in the caller's open transaction, as
``pending``. Its message must go out only once that transaction has committed (a consumer must
find the row) and never if it rolls back. This module holds the rows' records on the
transaction and sends them when it ends well:

- a SQLAlchemy ``Session``: at its ``after_commit`` event; dropped when its outermost
  transaction ends otherwise (a savepoint rolled back inside it drops nothing). A Session
  joined to a Connection's transaction commits nothing itself: its records wait for that one;
- a SQLAlchemy ``Connection``: SQLAlchemy signals a commit only before it happens, so the
  records are sent at the first moment the commit is known to be over: the connection going
  back to its pool (the end of ``with engine.begin()``), or its next transaction beginning.
  A rollback drops them.

Whatever the hooks miss (the process dies between the commit and the send, a commit whose
outcome is unknown) is already safe: the rows are ``pending``, and the reconciler sends every
task left pending past ``PENDING_GRACE_SECONDS``, the outbox pattern. So the hooks only make
the send prompt; they never decide whether a task exists. Before sending, the rows are read
again through tasklane's own engine, so nothing is sent for a transaction that did not commit.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event

from tasklane import sending
from tasklane.lifecycle import Status
from tasklane.logs import logger
from tasklane.store import TaskRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Where a connection's or session's waiting records are kept (its ``info`` dictionary).
WAITING = "tasklane.outbox"
#: Records whose transaction's COMMIT was issued; sent once it is known to be over.
COMMITTING = "tasklane.outbox.committing"

_installed: set[int] = set()
_lock = threading.Lock()


def _is_session(target: object) -> bool:
    """A SQLAlchemy ORM Session (the ORM is imported only if the caller uses it)."""
    orm = sys.modules.get("sqlalchemy.orm")
    return orm is not None and isinstance(target, orm.Session)


def connection_of(target: Connection | Session) -> Connection:
    """The Connection a caller's transaction runs on (a Session's, for the tasks' engine)."""
    if _is_session(target):
        return target.connection()
    if isinstance(target, Connection):
        return target
    raise TypeError(f"connection= takes a SQLAlchemy Connection or Session, not {type(target)}")


def send_after_commit(target: Connection | Session, records: Sequence[TaskRecord]) -> None:
    """Send these records' messages once ``target``'s transaction has committed."""
    records = [r for r in records if r.status is not Status.SCHEDULED]  # sent when due
    if _is_session(target):
        _install_session(target)
        target.info.setdefault(WAITING, []).extend(records)
        return
    _install_engine(target.engine)
    target.info.setdefault(WAITING, []).extend(records)


def _install_session(session: Session) -> None:
    if event.contains(session, "after_commit", _session_committed):
        return
    event.listen(session, "after_commit", _session_committed)
    event.listen(session, "after_transaction_end", _session_transaction_ended)


def _session_committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:  # a savepoint's (it fires for those too)
        return
    records = session.info.pop(WAITING, [])
    bind = session.bind
    if records and isinstance(bind, Connection) and bind.in_transaction():
        # joined to the caller's Connection transaction: committed only when that one is
        send_after_commit(bind, records)
        return
    _send(records)


def _session_transaction_ended(session: Session, transaction: Any) -> None:
    """The outermost transaction ended without a commit (after one, nothing waits any more):
    its records are dropped. A savepoint's end changes nothing: the rows of a rolled-back
    savepoint are simply not there when the records are read again before sending."""
    if transaction.parent is None:
        session.info.pop(WAITING, None)


def _install_engine(engine: Any) -> None:
    with _lock:
        if id(engine) in _installed:
            return
        event.listen(engine, "commit", _committing)
        event.listen(engine, "rollback", _rolled_back)
        event.listen(engine, "begin", _began)
        event.listen(engine.pool, "checkin", _checked_in)
        _installed.add(id(engine))


def _committing(conn: Connection) -> None:
    """COMMIT is about to be issued: what waited is sent once it is over."""
    if conn.invalidated:
        return
    waiting = conn.info.pop(WAITING, None)
    if waiting:
        conn.info.setdefault(COMMITTING, []).extend(waiting)


def _rolled_back(conn: Connection) -> None:
    # A connection lost mid-transaction is rolled back as it closes; reading its info then
    # would raise (PendingRollbackError) in place of the loss itself, which the store reports
    # as unavailable and the caller makes again. What waited on it is dropped at checkin.
    if conn.invalidated:
        return
    conn.info.pop(WAITING, None)
    conn.info.pop(COMMITTING, None)


def _began(conn: Connection) -> None:
    """The next transaction begins: the previous one's commit is over."""
    if conn.invalidated:
        return
    _send(conn.info.pop(COMMITTING, []))


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    """Back in the pool (the end of ``with engine.begin()``): its commit is over."""
    if record is not None:
        record.info.pop(WAITING, None)  # never committed: nothing to send
        _send(record.info.pop(COMMITTING, []))


def _send(records: Sequence[TaskRecord]) -> None:
    if not records:
        return

    try:
        sending.send_committed(records)
    except Exception as exc:  # the reconciler sends them: they are pending in the table
        logger.warning(
            "send after commit failed, tasks stay pending",
            extra={"count": len(records), "error": str(exc)},
        )
