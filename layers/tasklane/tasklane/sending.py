"""Sending: the message of a committed task goes to its lane's queue, and its row says so.

Every path that puts a task on SQS comes through here: a submit once its row is committed, a
transaction's tasks after its commit (:mod:`tasklane.outbox`), a workflow's steps as they are
released, a deferred or re-offered message, the reconciler's sends. A task ``scheduled`` past
SQS's 15-minute delay limit is not sent; the reconciler sends it when it comes within it.

In eager mode (:mod:`tasklane.eager`) what would be sent runs inline instead: the runner is
given through :data:`INLINE`, so this module never imports the executor that imports it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime

from tasklane import broker, metrics
from tasklane.config import Settings, settings
from tasklane.errors import StoreUnavailable
from tasklane.lanes import Lane
from tasklane.lifecycle import Status
from tasklane.logs import logger
from tasklane.store import TaskRecord, TaskStore, default_store

#: What runs tasks instead of sending them, when set (eager mode: :func:`tasklane.eager.eager`).
INLINE: ContextVar[Callable[[Sequence[TaskRecord], TaskStore], list[TaskRecord]] | None] = (
    ContextVar("tasklane_inline", default=None)
)


def delay_of(record: TaskRecord) -> int:
    """Seconds until a task is due, as SQS can delay a message (a later one is sent again)."""
    if record.run_at is None:
        return 0
    left = (record.run_at - datetime.now(UTC)).total_seconds()
    return max(0, min(broker.MAX_DELAY_S, math.ceil(left)))


def send(records: Sequence[TaskRecord], store: TaskStore, config: Settings) -> list[TaskRecord]:
    """Send the messages of committed tasks and mark those SQS accepted as queued. A task
    ``scheduled`` for later is not sent: the reconciler sends it when it is due; nor one
    ``waiting`` for the task ahead of it in its ordering key's line, whose end releases it."""
    inline = INLINE.get()
    if inline is not None:
        return inline(records, store)
    outgoing = [
        broker.Outgoing(r.id, r.task, Lane(r.lane), delay_of(r), r.priority or 0)
        for r in records
        if r.status not in (Status.SCHEDULED, Status.WAITING)  # sent when due, or released
    ]
    if not outgoing:
        return list(records)
    sent = broker.publish(outgoing, config)
    try:
        queued = store.mark_queued([r.id for r in records if r.id in sent])
    except StoreUnavailable:
        # The messages are out and the tasks will run (a pending task is claimable): say so,
        # rather than a 503 that would have the client submit the same work twice.
        logger.warning(
            "sent, but could not mark queued: tasks stay pending", extra={"count": len(sent)}
        )
        queued = set()
    for lane in Lane:
        metrics.count(
            metrics.SUBMITTED, lane, sum(o.lane is lane and o.id in sent for o in outgoing)
        )
    return [replace(r, status=Status.QUEUED) if r.id in queued else r for r in records]


def send_committed(
    records: Sequence[TaskRecord], *, store: TaskStore | None = None, config: Settings | None = None
) -> list[TaskRecord]:
    """Send the messages of tasks written in a caller's transaction, now that it is over:
    only those whose rows are there, still ``pending`` (a transaction that did not commit left
    none; one the reconciler already sent is not sent twice)."""
    store = store or default_store()
    present = store.pending_among([r.id for r in records])
    return send([r for r in records if r.id in present], store, config or settings())


def defer(
    task_id: uuid.UUID,
    task: str,
    run_at: datetime,
    *,
    expires: datetime | None = None,
    store: TaskStore | None = None,
    config: Settings | None = None,
) -> TaskRecord | None:
    """Make a waiting task run no earlier than ``run_at``, without holding anything in memory:
    due within SQS's delay limit, its message is sent now with the delay left; later, it is
    ``scheduled`` and :func:`reconcile` sends it when it comes within that limit. ``expires``
    stays with the task: reached first, it ends ``cancelled`` unrun. None when the task is not
    waiting (running or finished)."""
    store = store or default_store()
    record = store.defer(task_id, task, run_at, broker.MAX_DELAY_S, expires)
    if record is None or record.status is Status.SCHEDULED:
        return record
    (record,) = send([record], store, config or settings())
    return record


def resend(
    task_id: uuid.UUID,
    delay: int,
    *,
    store: TaskStore | None = None,
    config: Settings | None = None,
) -> bool:
    """Send a waiting task a fresh message, delayed by ``delay`` seconds (at most SQS's 15
    minutes), without changing its row. True when SQS took it."""
    store = store or default_store()
    record = store.get(task_id)
    if record.status not in (Status.PENDING, Status.QUEUED):
        return False
    outgoing = broker.Outgoing(
        record.id,
        record.task,
        Lane(record.lane),
        min(max(delay, 0), broker.MAX_DELAY_S),
        record.priority or 0,
    )
    return record.id in broker.publish([outgoing], config or settings())
