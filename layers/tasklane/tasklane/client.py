"""The Python API: submit tasks from any process and follow them, as Celery users expect.

::

    from tasklane import submit, task

    @task(name="text.wordcount")
    def wordcount(payload): ...

    handle = wordcount.delay({"text": "hello"})           # or submit("text.wordcount", {...})
    handle.get(timeout=30)                               # the result, or raises TaskFailed
    with engine.begin() as conn:                         # in the application's transaction:
        wordcount.delay({"text": "hi"}, connection=conn) # sent after the commit, never if not

It needs only what every part needs: ``DATABASE_URL`` (or ``DATABASE_SECRET_ARN``) and the
lanes' queue URLs. Submission goes through :mod:`tasklane.service`, the same path as the HTTP
API and the CLI, with the same validation and the same errors (:class:`TasklaneError`
subclasses), so nothing is ever half made.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tasklane import reads, service, submitters, workflows
from tasklane.config import settings
from tasklane.errors import TaskFailed, TasklaneError
from tasklane.lifecycle import Status
from tasklane.store import TaskRecord

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session


class TaskCancelled(TasklaneError):
    """The task ended ``cancelled``: cancelled before it ran, stopped when asked, or its
    message expired (``type`` and ``message`` say which)."""

    code = "task_cancelled"

    def __init__(self, task_id: uuid.UUID, error: dict | None) -> None:
        error = error or {}
        self.task_id = task_id
        self.type = error.get("type") or "Cancelled"
        self.message = error.get("message") or ""
        super().__init__(f"task {task_id} was cancelled: {self.type}: {self.message}")


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """A submitted task. Its state lives in Postgres: every call reads the row now."""

    id: uuid.UUID

    def record(self) -> TaskRecord:
        return reads.get_task(self.id)

    def status(self) -> Status:
        return self.record().status

    def get(self, timeout: float | None = None, interval: float = 0.2) -> Any:
        """The task's result once it succeeded; :class:`TaskFailed` if it failed,
        :class:`TaskCancelled` if it was cancelled; the builtin :class:`TimeoutError` if
        ``timeout`` seconds pass first (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.record()
            if record.status is Status.SUCCEEDED:
                return record.result
            if record.status is Status.FAILED:
                raise TaskFailed(self.id, record.error)
            if record.status is Status.CANCELLED:
                raise TaskCancelled(self.id, record.error)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} is still {record.status} after {timeout} s")
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, pause))

    def cancel(self) -> Status:
        """Cancel the task: ``cancelled`` now if it waits to run; if it runs, it is asked to
        stop (its status stays ``running`` until it does)."""
        return service.cancel_task(self.id).status

    def __str__(self) -> str:
        return str(self.id)


def submit(
    name: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
    connection: Connection | Session | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    owner: str | None = None,
    unique_key: str | None = None,
    unique_for: float | None = None,
    ordering_key: str | None = None,
    priority: int | None = None,
) -> TaskHandle:
    """Submit task ``name`` with ``payload`` (any JSON value).

    ``connection``: a SQLAlchemy Connection or Session in the caller's open transaction, on the
    tasks' database. The task's row is written in that transaction and its message sent after
    it commits; if it rolls back, the task never existed. ``countdown`` (seconds) or ``eta``
    (an aware datetime): not to run before then. ``owner``: whose task it is, for the HTTP
    API's per-caller view (an IAM ARN, or ``"{iss}#{sub}"`` of a JWT); left out, the owner of
    the task running here (a child task is its parent's owner's), else none in particular
    (operators see it). ``unique_key``/``unique_for``: this submission's key and window
    (:mod:`tasklane.unique`), over the task's own; a duplicate's handle is the live task's.
    ``ordering_key``: the key it runs in order with, over the one the task makes.
    ``priority``: 0 to 9, over the task's own (:mod:`tasklane.lanes`).
    """
    body = {
        "task": name,
        "payload": payload,
        "unique_key": unique_key,
        "unique_for": unique_for,
        "ordering_key": ordering_key,
        "priority": priority,
    }
    submission = service.parse_submission(body, settings(), service.due_at(countdown, eta))
    record, _ = service.submit(
        submission,
        idempotency_key=idempotency_key,
        connection=connection,
        owner=_owner(owner),
    )
    return TaskHandle(record.id)


def _owner(owner: str | None) -> str:
    """``owner``, or the running task's (its children are its owner's), or none."""
    if owner is not None:
        return owner
    from tasklane.executor import current_task

    running = current_task()
    return running.owner if running is not None else ""


def submit_many(
    items: Iterable[tuple[str, Any]],
    *,
    connection: Connection | Session | None = None,
    owner: str | None = None,
) -> list[TaskHandle]:
    """Submit many tasks at once: one insert, then SendMessageBatch. One handle per task, in
    order. The whole batch is validated first: one bad item fails it, and nothing is stored."""
    subs = service.parse_batch(
        {"tasks": [{"task": name, "payload": payload} for name, payload in items]},
        settings(),
        max_tasks=None,
    )
    if not subs:
        return []
    records, _ = service.submit_batch(subs, connection=connection, owner=_owner(owner))
    return [TaskHandle(r.id) for r in records]


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """A submitted workflow (chain, group or chord). Every call reads Postgres now."""

    id: uuid.UUID
    #: Its tasks' ids, in the order of its description.
    task_ids: tuple[uuid.UUID, ...]

    def view(self) -> reads.WorkflowView:
        return reads.get_workflow(self.id)

    def status(self) -> str:
        """``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        return self.view().status

    def tasks(self) -> list[TaskHandle]:
        return [TaskHandle(i) for i in self.task_ids]

    def get(self, timeout: float | None = None, interval: float = 0.2) -> Any:
        """The workflow's result once it succeeded: a chain's last result, a group's results
        in member order, a chord's body's result. :class:`TaskFailed` (naming the task) if a
        task failed it, :class:`TaskCancelled` if it was cancelled; the builtin
        :class:`TimeoutError` if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.view()
            if view.status == "succeeded":
                return view.result
            if view.status == "failed":
                failed = next(t for t in view.tasks if t.status is Status.FAILED)
                raise TaskFailed(failed.id, TaskHandle(failed.id).record().error)
            if view.status == "cancelled":
                cancelled = next(t for t in view.tasks if t.status is Status.CANCELLED)
                raise TaskCancelled(cancelled.id, TaskHandle(cancelled.id).record().error)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {self.id} is still {view.status} after {timeout} s")
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, pause))

    def cancel(self) -> str:
        """Cancel what has not run: waiting tasks now, running ones asked to stop."""
        return service.cancel_workflow(self.id).status

    def __str__(self) -> str:
        return str(self.id)


def submit_workflow(
    node: workflows.Node,
    *,
    connection: Connection | Session | None = None,
    owner: str | None = None,
) -> WorkflowHandle:
    """Submit a chain, group or chord (:mod:`tasklane.workflows`): all its tasks are stored
    at once, and its first steps sent (after the caller's commit, with ``connection``)."""
    workflow_id, records, _ = service.submit_workflow(
        node, connection=connection, owner=_owner(owner)
    )
    return WorkflowHandle(workflow_id, tuple(r.id for r in records))


submitters.bind(submit=submit, submit_workflow=submit_workflow)
