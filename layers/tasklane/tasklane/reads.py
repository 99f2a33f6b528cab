"""Reads: a task, a page of tasks, a workflow, the figures an operator looks at first.

Every read a client makes goes through here, scoped to what its caller may see
(:mod:`tasklane.callers`): another owner's task or workflow is not found, as if it did not
exist. Listings are keyset pages behind an opaque cursor; none carries a task's result.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from tasklane import broker, workflows
from tasklane.callers import Caller
from tasklane.config import Settings, settings
from tasklane.errors import InvalidRequest, TaskNotFound
from tasklane.lanes import Lane, dead_letter_url, high_queue_url, own_queue_url
from tasklane.lifecycle import Status
from tasklane.logs import logger
from tasklane.moments import in_range
from tasklane.store import TaskFilter, TaskRecord, TaskStore, default_store

T = TypeVar("T")


def get_task(
    task_id: str | uuid.UUID, *, store: TaskStore | None = None, caller: Caller | None = None
) -> TaskRecord:
    """A task by id; for a ``caller`` (the HTTP API's), only one it may see: another owner's
    task is not found, as if it did not exist. Without one (Python code that shares the
    database), any."""
    try:
        parsed = task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))
    except ValueError:
        raise TaskNotFound(f"no task with id {task_id}") from None
    record = (store or default_store()).get(parsed)
    if caller is not None and not caller.sees(record.owner):
        raise TaskNotFound(f"no task with id {task_id}")
    return record


#: The most of a task's input (characters of its JSON text) a read shows.
PAYLOAD_SHOWN_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class Input:
    """A task's input as a read shows it: the JSON value whole, or, when it is larger than
    the read shows, the start of its JSON text (``truncated``). ``chars``: its whole length."""

    value: Any
    chars: int
    truncated: bool
    pruned: bool


def get_input(
    record: TaskRecord, *, store: TaskStore | None = None, limit: int = PAYLOAD_SHOWN_MAX
) -> Input:
    """The input (what it was submitted with) of a task read by :func:`get_task`, so for
    whoever may see it: a failed task's payload is the first thing its debugging needs. Read
    only when asked for; never logged."""
    text, chars = (store or default_store()).payload(record.id, limit)
    if text is None:
        return Input(None, 0, truncated=False, pruned=True)
    if chars > limit:
        return Input(text, chars, truncated=True, pruned=False)
    return Input(json.loads(text), chars, truncated=False, pruned=False)


#: The most tasks one page of a listing holds.
PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, and the cursor of the next (None: this was the last)."""

    tasks: list[TaskRecord]
    next_cursor: str | None


def cursor_of(value: Any) -> str:
    """An opaque cursor holding ``value`` (JSON): where the next page starts."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def read_cursor(cursor: str, read: Callable[[Any], T]) -> T:
    """What :func:`cursor_of` put in ``cursor``, through ``read`` (which raises ``ValueError``
    or ``TypeError`` on what it does not expect); :class:`InvalidRequest` for any other."""
    try:
        return read(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))
    except (ValueError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "cursor: not one this API gave (pass next_cursor as it came)"
        ) from None


def _cursor(record: TaskRecord) -> str:
    if record.created_at is None:  # pages are of rows read back, which always have one
        raise ValueError("a cursor is made from a stored task")
    return cursor_of([record.created_at.isoformat(), str(record.id)])


def _after(cursor: str) -> tuple[datetime, uuid.UUID]:
    def read(value: Any) -> tuple[datetime, uuid.UUID]:
        created_at, task_id = value
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return in_range(moment, "cursor"), uuid.UUID(task_id)

    return read_cursor(cursor, read)


def list_tasks(
    where: TaskFilter,
    limit: int = 50,
    cursor: str | None = None,
    *,
    store: TaskStore | None = None,
    caller: Caller | None = None,
) -> Page:
    """Tasks matching ``where``, newest first, ``limit`` (1 to 500) at a time: pass the page's
    ``next_cursor`` for the next. Pages hold still while tasks arrive (keyset pagination)."""
    if not 1 <= limit <= PAGE_MAX:
        raise InvalidRequest(f"limit must be 1 to {PAGE_MAX}")
    if where.lane is not None and where.lane not in {lane.value for lane in Lane}:
        raise InvalidRequest("lane must be 'lambda' or 'celery'")
    where = scoped(where, caller)
    found = (store or default_store()).find(where, limit + 1, _after(cursor) if cursor else None)
    page = found[:limit]
    return Page(page, _cursor(page[-1]) if len(found) > limit else None)


def scoped(where: TaskFilter, caller: Caller | None) -> TaskFilter:
    """``where``, narrowed to the caller's own tasks unless it is an operator."""
    if caller is None or caller.scope is None:
        return where
    return replace(where, owner=caller.scope)


#: How long a worker that stopped beating stays in the workers view (then it is forgotten).
WORKERS_FORGOTTEN_AFTER = timedelta(minutes=10)


def workers(*, store: TaskStore | None = None, caller: Caller | None = None) -> dict[str, Any]:
    """The Celery workers that beat lately (:mod:`tasklane.heartbeat`) and each lane's running
    tasks now (the lambda lane's concurrency). For operators: a caller who is not one gets
    neither (they are everyone's)."""
    if caller is not None and not caller.operator:
        return {"workers": [], "running": {}}
    return (store or default_store()).workers(WORKERS_FORGOTTEN_AFTER)


#: The windows a per-task view may look over: a minute to a week.
WINDOW_S = (60, 7 * 24 * 3600)


def by_task(
    window_s: int = 3600, *, store: TaskStore | None = None, caller: Caller | None = None
) -> list[dict[str, Any]]:
    """Per task name over the last ``window_s`` seconds: counts by status (tasks created in
    it), runtime p50/p95 and failure rate (tasks finished in it). A caller who is not an
    operator gets the figures of its own tasks."""
    if not WINDOW_S[0] <= window_s <= WINDOW_S[1]:
        raise InvalidRequest(f"window: {window_s} s is not between {WINDOW_S[0]} and {WINDOW_S[1]}")
    scope = caller.scope if caller is not None else None
    return (store or default_store()).by_task(timedelta(seconds=window_s), scope)


def stats(
    *, store: TaskStore | None = None, config: Settings | None = None, caller: Caller | None = None
) -> dict[str, Any]:
    """What an operator looks at first: counts by status and lane, the oldest queued task's
    age per lane, completions per minute over 15 minutes, and each queue's depth (where SQS
    answers; null where it does not). A caller who is not an operator gets the figures of its
    own tasks, and no queue depths (they count everyone's)."""
    config = config or settings()
    scope = caller.scope if caller is not None else None
    figures = (store or default_store()).stats(scope)
    if scope is not None:
        return figures | {"queue_depths": {}}
    urls: dict[str, str | None] = {}
    for lane in Lane:
        urls[lane.value] = own_queue_url(lane, config)
        urls[f"{lane.value}_high"] = high_queue_url(lane, config)
        urls[f"{lane.value}_dlq"] = dead_letter_url(lane, config)
    depths: dict[str, int | None] = {}
    for name, url in urls.items():
        try:
            depths[name] = broker.waiting_messages(url) if url else None
        except Exception as exc:  # a figure missing is not an outage
            logger.warning("queue depth unknown", extra={"queue": name, "error": str(exc)})
            depths[name] = None
    return figures | {"queue_depths": depths}


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """A workflow as clients see it: its status (from its tasks'), its tasks in order, and its
    result (succeeded) or the error of the task that failed it."""

    id: uuid.UUID
    status: str
    tasks: list[TaskRecord]
    result: Any = None
    error: dict | None = None
    created_at: datetime | None = None
    #: The size of the result's parts, when they were too large to read (``max_result_bytes``).
    result_omitted_bytes: int | None = None
    #: Each task's predecessors (the ids of the steps it waits for): the workflow's graph.
    after: dict[uuid.UUID, list[str]] | None = None


def workflow_id_of(workflow_id: str | uuid.UUID) -> uuid.UUID:
    try:
        return workflow_id if isinstance(workflow_id, uuid.UUID) else uuid.UUID(str(workflow_id))
    except ValueError:
        raise TaskNotFound(f"no workflow with id {workflow_id}") from None


def get_workflow(
    workflow_id: str | uuid.UUID,
    *,
    store: TaskStore | None = None,
    caller: Caller | None = None,
    max_result_bytes: int | None = None,
) -> WorkflowView:
    """A workflow, its tasks (without their results) and, once it succeeded, its result:
    assembled from its tasks' unless they are together over ``max_result_bytes`` (then
    ``result_omitted_bytes`` says how large they are)."""
    store = store or default_store()
    row, records, after = store.workflow(workflow_id_of(workflow_id))
    if caller is not None and not caller.sees(row.owner):
        raise TaskNotFound(f"no workflow with id {workflow_id}")
    status = workflows.status_of([r.status.value for r in records])
    failed = next((r for r in records if r.status is Status.FAILED), None)
    error = None
    if failed is not None:
        stored = failed.error or {}
        error = {
            "task_id": str(failed.id),
            "task": failed.task,
            "type": stored.get("type"),
            "message": stored.get("message"),
        }
    result, omitted = None, None
    if status == "succeeded":
        parts, size = store.results_of(workflows.ids_in(row.output), max_result_bytes)
        if parts is None:
            omitted = size
        else:
            result = workflows.assemble(row.output, {str(k): v for k, v in parts.items()})
    return WorkflowView(row.id, status, records, result, error, row.created_at, omitted, after)
