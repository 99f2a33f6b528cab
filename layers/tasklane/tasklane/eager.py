"""Eager mode: tasks run inline, in this process, instead of being sent (tests, scripts).

:func:`eager` gives the sending path (:mod:`tasklane.sending`) a runner to use in place of SQS;
each task then runs through the executor, one attempt, as a consumer would run it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

from tasklane import sending
from tasklane.errors import TaskFailed
from tasklane.executor import Attempt, Delivery, Executor, Outcome, delivery_token
from tasklane.lifecycle import Status
from tasklane.store import TaskRecord, TaskStore

#: Eager mode's tasks still to run in this context (None: none is running).
_EAGER_QUEUE: ContextVar[list[TaskRecord] | None] = ContextVar("tasklane_eager_queue", default=None)
#: The message id of an eager run's delivery token (no message: the run is inline).
EAGER = "eager"
#: Whether a task that fails raises from the call that submitted it.
_PROPAGATE: ContextVar[bool] = ContextVar("tasklane_eager_propagate", default=False)


@contextlib.contextmanager
def eager(propagate: bool = False) -> Iterator[None]:
    """Run every task submitted in this block inline, through the executor, instead of
    sending its message (a ``scheduled`` one waits, as it would). One attempt each: a task
    that fails ends ``failed`` (``.get()`` raises :class:`~tasklane.errors.TaskFailed`), and
    with ``propagate`` (Celery's ``task_eager_propagates``) the submitting call raises it."""
    token = sending.INLINE.set(run_inline)
    propagating = _PROPAGATE.set(propagate)
    try:
        yield
    finally:
        _PROPAGATE.reset(propagating)
        sending.INLINE.reset(token)


def run_inline(records: Sequence[TaskRecord], store: TaskStore) -> list[TaskRecord]:
    """Each task runs now, in this process, through the executor (one attempt). Tasks sent
    while one runs (a child, a workflow's next step) run after it, from a queue, as a worker
    would take them: a chain of any length, not a recursion as deep as the chain."""
    queue = _EAGER_QUEUE.get()
    if queue is not None:
        queue.extend(records)
        return list(records)
    queue = list(records)
    token = _EAGER_QUEUE.set(queue)
    executor = Executor(store)
    try:
        while queue:
            record = queue.pop(0)
            if record.status is not Status.SCHEDULED:
                delivery = Delivery(record.task, record.id, delivery_token(EAGER))
                step = executor.claim(delivery, 3600)
                if isinstance(step, Attempt):
                    verdict, _ = executor.run(step)
                    if verdict.outcome is Outcome.RETRY:  # no waiting for a retry inline
                        store.mark_dead(record.id, EAGER, {}, max_requeues=1)
    finally:
        _EAGER_QUEUE.reset(token)
    ended = [store.get(r.id) for r in records]
    failed = next((r for r in ended if r.status is Status.FAILED), None)
    if failed is not None and _PROPAGATE.get():
        raise TaskFailed(failed.id, failed.error)
    return ended
