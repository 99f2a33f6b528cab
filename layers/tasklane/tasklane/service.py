"""Use cases: submit tasks, read them, retry them, reconcile those left pending.

Plain functions over the store and the broker; the HTTP routes, the CLI and the scheduled
reconciler call these and only shape their input and output.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tasklane import broker, metrics, outbox, payloads, periodic, registry, workflows
from tasklane.callers import Caller
from tasklane.config import Settings, settings
from tasklane.errors import (
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    StoreUnavailable,
    TaskNotFound,
    UnknownTask,
)
from tasklane.ids import new_id
from tasklane.lanes import Lane, dead_letter_url, queue_url
from tasklane.lifecycle import Status
from tasklane.logs import logger, task_fields
from tasklane.moments import in_range
from tasklane.store import NewTask, TaskFilter, TaskRecord, TaskStore

if TYPE_CHECKING:  # the ORM is imported only by applications that pass a Session
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

BATCH_MAX = 100
T = TypeVar("T")
#: Eager mode (``tasklane.testing.eager()``): run tasks inline instead of sending them.
EAGER: ContextVar[bool] = ContextVar("tasklane_eager", default=False)


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated request to run ``task`` on a payload (already serialized, size-checked),
    now or from ``run_at``; ``timing`` is that wish as asked (a delay, or a moment)."""

    task: str
    payload_json: str
    run_at: datetime | None = None
    timing: str | None = None

    @property
    def request_hash(self) -> str:
        digest = hashlib.sha256(self.task.encode())
        digest.update(b"\0")
        digest.update(self.payload_json.encode())
        if self.timing is not None:
            digest.update(b"\0" + self.timing.encode())
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Timing:
    """When a task should run, as asked: ``run_at``, and the wish as given (for replays)."""

    run_at: datetime
    asked: str


def due_at(countdown: float | None = None, eta: datetime | None = None) -> Timing | None:
    """``countdown`` seconds from now, or the aware moment ``eta``; not both (400)."""
    if countdown is not None and eta is not None:
        raise InvalidRequest("give a countdown or an eta, not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float):
            raise InvalidRequest("countdown must be a number of seconds")
        if not 0 <= countdown < 10 * 365 * 86400 or countdown != countdown:
            raise InvalidRequest("countdown must be 0 or more seconds (and under ten years)")
        return Timing(datetime.now(UTC) + timedelta(seconds=countdown), f"delay:{countdown}")
    if eta is not None:
        if not isinstance(eta, datetime) or eta.tzinfo is None:
            raise InvalidRequest("eta must be a datetime with a time zone")
        try:
            in_range(eta, "eta")
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return Timing(eta, f"at:{eta.isoformat()}")
    return None


def parse_submission(body: Any, config: Settings, timing: Timing | None = None) -> Submission:
    """Validate ``{"task": NAME, "payload": JSON}``: shape (400), task name (422), size (413)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    name = body.get("task")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'task' is required and must be a non-empty string")
    if "payload" not in body:
        raise InvalidRequest("'payload' is required (any JSON value)")
    extra = set(body) - {"task", "payload", "delay_seconds", "run_at"}
    if extra:
        raise InvalidRequest(f"unexpected fields: {', '.join(sorted(extra))}")
    if body.get("delay_seconds") is not None or body.get("run_at") is not None:
        timing = due_at(body.get("delay_seconds"), body.get("run_at"))
    registry.get(name)  # UnknownTask → 422
    payload_json = payloads.dumps(body["payload"])
    size = len(payload_json.encode())
    if size > config.max_payload_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes, the limit is {config.max_payload_bytes} (MAX_PAYLOAD_BYTES)"
        )
    if timing is None:
        return Submission(name, payload_json)
    return Submission(name, payload_json, timing.run_at, timing.asked)


def parse_batch(body: Any, config: Settings, max_tasks: int | None = BATCH_MAX) -> list[Submission]:
    """Validate a batch: every item as :func:`parse_submission` (its index in the error). From
    HTTP (``max_tasks``), at most 100 tasks whose payloads together fit in one request."""
    if not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
        raise InvalidRequest('the request body must be {"tasks": [{"task", "payload"}, ...]}')
    items = body["tasks"]
    if max_tasks is not None and not 1 <= len(items) <= max_tasks:
        raise InvalidRequest(f"a batch holds 1 to {max_tasks} tasks, got {len(items)}")
    subs = []
    for i, item in enumerate(items):
        try:
            subs.append(parse_submission(item, config))
        except (InvalidRequest, PayloadTooLarge, UnknownTask) as exc:
            raise type(exc)(f"tasks[{i}]: {exc}") from None
    total = sum(len(s.payload_json.encode()) for s in subs)
    if max_tasks is not None and total > config.max_payload_bytes:
        raise PayloadTooLarge(
            f"the batch's payloads are {total} bytes, the limit is {config.max_payload_bytes}"
        )
    return subs


@functools.cache
def default_store() -> TaskStore:
    from tasklane.database import engine

    config = settings()
    return TaskStore(engine(), config.max_payload_bytes, config.max_result_bytes)


def new_task(sub: Submission) -> NewTask:
    """The row for a submission: a fresh id, the task's lane and attempt limit."""
    spec = registry.get(sub.task)
    return NewTask(
        new_id(), spec.name, spec.lane.value, sub.payload_json, spec.max_attempts, sub.run_at
    )


def _delay(record: TaskRecord) -> int:
    """Seconds until a task is due, as SQS can delay a message (a later one is sent again)."""
    if record.run_at is None:
        return 0
    left = (record.run_at - datetime.now(UTC)).total_seconds()
    return max(0, min(broker.MAX_DELAY_S, math.ceil(left)))


#: Eager mode's tasks still to run in this context (None: none is running).
_EAGER_QUEUE: ContextVar[list[TaskRecord] | None] = ContextVar("tasklane_eager_queue", default=None)


def _run_inline(records: Sequence[TaskRecord], store: TaskStore) -> list[TaskRecord]:
    """Eager mode: each task runs now, in this process, through the executor (one attempt).
    Tasks sent while one runs (a child, a workflow's next step) run after it, from a queue,
    as a worker would take them: a chain of any length, not a recursion as deep as the chain."""
    from tasklane.executor import Attempt, Delivery, Executor, delivery_token

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
                delivery = Delivery(record.task, record.id, delivery_token("eager"))
                step = executor.claim(delivery, 3600)
                if isinstance(step, Attempt):
                    executor.run(step)
    finally:
        _EAGER_QUEUE.reset(token)
    return [store.get(r.id) for r in records]


def _send(records: Sequence[TaskRecord], store: TaskStore, config: Settings) -> list[TaskRecord]:
    """Send the messages of committed tasks and mark those SQS accepted as queued. A task
    ``scheduled`` for later is not sent: the reconciler sends it when it is due."""
    if EAGER.get():
        return _run_inline(records, store)
    outgoing = [
        broker.Outgoing(r.id, r.task, Lane(r.lane), _delay(r))
        for r in records
        if r.status is not Status.SCHEDULED
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


def submit(
    sub: Submission,
    *,
    idempotency_key: str | None = None,
    store: TaskStore | None = None,
    config: Settings | None = None,
    connection: Connection | Session | None = None,
    owner: str = "",
) -> tuple[TaskRecord, bool]:
    """Store then send one task. Returns (task, created); created is False for a replayed key.

    The row is committed before the message is sent (the claim check must exist when a consumer
    reads the message); a send that fails leaves the task ``pending`` for the reconciler. With
    ``connection``, the row is written in the caller's open transaction and the message sent
    once it has committed (:mod:`tasklane.outbox`). ``owner`` is who submits it
    (:mod:`tasklane.callers`); an idempotency key is that owner's own.
    """
    store = store or default_store()
    config = config or settings()
    new = new_task(sub)
    conn = outbox.connection_of(connection) if connection is not None else None
    if idempotency_key is None:
        (record,) = store.insert([new], broker.MAX_DELAY_S, conn, owner)
    else:
        record, request_hash, created = store.insert_idempotent(
            new, idempotency_key, sub.request_hash, broker.MAX_DELAY_S, conn, owner
        )
        if not created:
            return _replayed(request_hash, sub.request_hash, lambda: record), False
    if connection is not None:
        outbox.send_after_commit(connection, [record])
    else:
        (record,) = _send([record], store, config)
    logger.info("task submitted", extra=task_fields(record.id, record.task, status=record.status))
    return record, True


def submit_batch(
    subs: Sequence[Submission],
    *,
    idempotency_key: str | None = None,
    store: TaskStore | None = None,
    config: Settings | None = None,
    connection: Connection | Session | None = None,
    owner: str = "",
) -> tuple[list[TaskRecord], bool]:
    """Store many tasks (``owner``'s) in one insert, then send them with SendMessageBatch
    (after the caller's commit, with ``connection``). Returns (tasks, created): with an
    ``idempotency_key`` used before, nothing is stored and the first request's tasks come back
    (created False), or :class:`IdempotencyConflict` if that request was another."""
    store = store or default_store()
    config = config or settings()
    conn = outbox.connection_of(connection) if connection is not None else None
    new = [new_task(s) for s in subs]
    if idempotency_key is None:
        records = store.insert(new, broker.MAX_DELAY_S, conn, owner)
    else:
        digest = _digest(s.request_hash for s in subs)
        ids = [t.id for t in new]
        with store.keyed("batch", idempotency_key, digest, ids, conn, owner) as use:
            if use.first:
                records = store.insert(new, broker.MAX_DELAY_S, use.connection, owner)
        if not use.first:
            return _replayed(use.request_hash, digest, lambda: store.get_many(use.ids)), False
    if connection is not None:
        outbox.send_after_commit(connection, records)
    else:
        records = _send(records, store, config)
    logger.info("batch submitted", extra={"count": len(records)})
    return records, True


def _digest(parts: Iterable[str]) -> str:
    """One hash of a request made of parts (a batch's items, a workflow's description)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _replayed(first_hash: str | None, request_hash: str, first: Callable[[], Any]) -> Any:
    """What a request whose idempotency key was used before gets: the first request's
    answer (``first()``), if it was this same request (its hash, ``first_hash``)."""
    if first_hash != request_hash:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request body")
    return first()


def send_committed(
    records: Sequence[TaskRecord], *, store: TaskStore | None = None, config: Settings | None = None
) -> list[TaskRecord]:
    """Send the messages of tasks written in a caller's transaction, now that it is over:
    only those whose rows are there, still ``pending`` (a transaction that did not commit left
    none; one the reconciler already sent is not sent twice)."""
    store = store or default_store()
    present = store.pending_among([r.id for r in records])
    return _send([r for r in records if r.id in present], store, config or settings())


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
    where = _scoped(where, caller)
    found = (store or default_store()).find(where, limit + 1, _after(cursor) if cursor else None)
    page = found[:limit]
    return Page(page, _cursor(page[-1]) if len(found) > limit else None)


def _scoped(where: TaskFilter, caller: Caller | None) -> TaskFilter:
    """``where``, narrowed to the caller's own tasks unless it is an operator."""
    if caller is None or caller.scope is None:
        return where
    return replace(where, owner=caller.scope)


#: The most tasks one bulk retry re-queues.
RETRY_MAX = 1000


def retry_matching(
    where: TaskFilter,
    limit: int = RETRY_MAX,
    *,
    store: TaskStore | None = None,
    config: Settings | None = None,
    caller: Caller | None = None,
) -> tuple[list[TaskRecord], bool]:
    """Re-queue up to ``limit`` (1 to 1,000) failed tasks matching ``where``, newest first,
    through the bulk send path; returns them and whether more remain (call again)."""
    if where.status not in (None, Status.FAILED):
        raise InvalidRequest("only failed tasks are retried: leave out status, or say failed")
    if not 1 <= limit <= RETRY_MAX:
        raise InvalidRequest(f"limit must be 1 to {RETRY_MAX}")
    store = store or default_store()
    records, more = store.requeue_failed_matching(_scoped(where, caller), limit)
    records = _send(records, store, config or settings()) if records else []
    logger.info("tasks retried in bulk", extra={"count": len(records), "more": more})
    return records, more


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
        urls[lane.value] = (
            config.lambda_queue_url if lane is Lane.LAMBDA else config.celery_queue_url
        )
        urls[f"{lane.value}_dlq"] = dead_letter_url(lane, config)
    depths: dict[str, int | None] = {}
    for name, url in urls.items():
        try:
            depths[name] = broker.waiting_messages(url) if url else None
        except Exception as exc:  # a figure missing is not an outage
            logger.warning("queue depth unknown", extra={"queue": name, "error": str(exc)})
            depths[name] = None
    return figures | {"queue_depths": depths}


def cancel_task(
    task_id: str | uuid.UUID, *, store: TaskStore | None = None, caller: Caller | None = None
) -> TaskRecord:
    """Cancel a task: now if it waits to run, when it stops if it runs (it is asked). A step
    of a workflow cancels what has not run of its workflow, in the same transaction: it
    cannot go on without it."""
    store = store or default_store()
    record = store.cancel(get_task(task_id, store=store, caller=caller).id)
    logger.info("task cancelled", extra=task_fields(record.id, record.task, status=record.status))
    return record


# -- workflows ---------------------------------------------------------------------------------
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


def submit_workflow(
    node: workflows.Node,
    *,
    max_tasks: int | None = None,
    max_bytes: int | None = None,
    store: TaskStore | None = None,
    config: Settings | None = None,
    connection: Connection | Session | None = None,
    owner: str = "",
    idempotency_key: str | None = None,
) -> tuple[uuid.UUID, list[TaskRecord], bool]:
    """Store a workflow whole (all its tasks, in one transaction), then send its first steps
    through the bulk path; the others wait for their predecessors. Each task is validated as
    :func:`parse_submission` does, before anything is stored; from HTTP, the number of tasks
    (``max_tasks``) and the payloads' total size (``max_bytes``) too. Returns the workflow's
    id, its tasks in order, and whether it was created: with an ``idempotency_key`` used
    before for the same description, the first request's workflow (created False)."""
    store = store or default_store()
    config = config or settings()
    planned = workflows.plan(node, max_tasks)
    new = []
    for step in planned.steps:
        payload = step.payload if step.bound else None
        sub = parse_submission({"task": step.task, "payload": payload}, config)
        new.append(replace(new_task(sub), id=step.id))
    total = sum(len(t.payload_json.encode()) for t in new)
    if max_bytes is not None and total > max_bytes:
        raise PayloadTooLarge(
            f"the workflow's payloads are {total} bytes, the limit is {max_bytes}"
        )
    conn = outbox.connection_of(connection) if connection is not None else None
    steps = [s.step_json() for s in planned.steps]
    if idempotency_key is None:
        records = store.insert_workflow(planned.id, planned.output, new, steps, conn, owner)
    else:
        digest = _digest([repr(node)])
        with store.keyed("workflow", idempotency_key, digest, [planned.id], conn, owner) as use:
            if use.first:
                records = store.insert_workflow(
                    planned.id, planned.output, new, steps, use.connection, owner
                )
        if not use.first:
            (workflow_id,) = use.ids
            view = _replayed(
                use.request_hash, digest, lambda: get_workflow(workflow_id, store=store)
            )
            return workflow_id, view.tasks, False
    first = [r for r in records if r.status is Status.PENDING]
    if connection is not None:
        outbox.send_after_commit(connection, first)
    else:
        sent = {r.id: r for r in _send(first, store, config)}
        records = [sent.get(r.id, r) for r in records]
    logger.info("workflow submitted", extra={"workflow_id": str(planned.id), "count": len(new)})
    return planned.id, records, True


def _workflow_id(workflow_id: str | uuid.UUID) -> uuid.UUID:
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
    row, records = store.workflow(_workflow_id(workflow_id))
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
    return WorkflowView(row.id, status, records, result, error, row.created_at, omitted)


def cancel_workflow(
    workflow_id: str | uuid.UUID, *, store: TaskStore | None = None, caller: Caller | None = None
) -> WorkflowView:
    """Cancel what has not run: waiting tasks now, running ones asked to stop."""
    store = store or default_store()
    get_workflow(workflow_id, store=store, caller=caller)  # one the caller may see
    count = store.cancel_workflow(_workflow_id(workflow_id))
    logger.info("workflow cancelled", extra={"workflow_id": str(workflow_id), "count": count})
    return get_workflow(workflow_id, store=store)


def retry_task(
    task_id: str | uuid.UUID,
    *,
    store: TaskStore | None = None,
    config: Settings | None = None,
    caller: Caller | None = None,
) -> TaskRecord:
    """Re-queue a ``failed`` task from Postgres (its payload never left the database)."""
    store = store or default_store()
    record = store.requeue_failed(get_task(task_id, store=store, caller=caller).id)
    (record,) = _send([record], store, config or settings())
    logger.info("task retried", extra=task_fields(record.id, record.task))
    return record


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
    (record,) = _send([record], store, config or settings())
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
        record.id, record.task, Lane(record.lane), min(max(delay, 0), broker.MAX_DELAY_S)
    )
    return record.id in broker.publish([outgoing], config or settings())


def fire_schedules(
    *, store: TaskStore | None = None, config: Settings | None = None, now: datetime | None = None
) -> list[TaskRecord]:
    """Fire the periodic tasks' ticks due within SQS's delay limit (:mod:`tasklane.periodic`):
    a task per tick, sent delayed to run at its tick; missed ticks coalesced unless the
    schedule catches up. Each tick's task is keyed by schedule and tick, so passes side by side
    fire it once. ``now``: the clock (a test's)."""
    store = store or default_store()
    now = now or datetime.now(UTC)
    fired: list[TaskRecord] = []
    for spec in registry.all_tasks():
        if spec.schedule is not None:
            with phase(f"schedule {spec.name}"):
                fired += _fire_schedule(spec.name, spec.schedule, store, now)
    if fired:
        logger.info("periodic ticks fired", extra={"count": len(fired)})
    return _send(fired, store, config or settings()) if fired else []


def _fire_schedule(
    name: str, schedule: periodic.Schedule, store: TaskStore, now: datetime
) -> list[TaskRecord]:
    """One schedule's ticks now due: a task each (coalesced unless it catches up)."""
    seen = store.schedule_last_tick(name, schedule.expression, now)
    due = schedule.due(seen, now, now + timedelta(seconds=broker.MAX_DELAY_S))
    if not due:
        return []
    fired = []
    payload_json = payloads.dumps(schedule.payload)
    for tick in periodic.coalesced(due, now, schedule.catch_up):
        sub = Submission(name, payload_json, tick, f"at:{tick.isoformat()}")
        record, _, created = store.insert_idempotent(
            new_task(sub),
            f"periodic:{name}:{tick.isoformat()}",
            sub.request_hash,
            broker.MAX_DELAY_S,
        )
        if created:
            fired.append(record)
    store.advance_schedule(name, seen, due[-1])
    return fired


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """One phase of a reconciler pass (a schedule, the due sends, the stale rescue): its
    failure is logged with its name and counted (``ReconcilerErrors``, alarmed in the
    template), and the pass goes on with the next phase."""
    try:
        yield
    except Exception:
        logger.exception("reconciler phase failed", extra={"phase": name})
        metrics.count(metrics.RECONCILER_ERRORS, "all")


#: Tasks claimed and sent at a time by a reconciler pass (one transaction, SQS batches of ten).
RECONCILE_BATCH = 500
#: What a pass may take unless told (the reconciler's Lambda gives its own time left).
RECONCILE_BUDGET_S = 50.0


def reconcile(
    *,
    store: TaskStore | None = None,
    config: Settings | None = None,
    limit: int = RECONCILE_BATCH,
    budget_s: float = RECONCILE_BUDGET_S,
) -> list[TaskRecord]:
    """The scheduled pass: fire the periodic tasks' ticks, send the ``scheduled`` tasks now due
    within SQS's delay limit, and again the tasks whose message may be missing (the outbox
    relay): left ``pending``, ``running`` under a lease long expired, or ``queued`` with no
    delivery for too long in a lane whose queue is empty.

    No cap on what is due: each phase claims and sends ``limit`` tasks at a time until none
    is left or ``budget_s`` is spent; what is left then goes to the passes already running
    beside it (the schedule starts one a minute; ``FOR UPDATE SKIP LOCKED`` shares the rows)."""
    store = store or default_store()
    config = config or settings()
    deadline = time.monotonic() + budget_s
    with phase("schedules"):
        fire_schedules(store=store, config=config)
    due: list[TaskRecord] = []
    stale: list[TaskRecord] = []
    with phase("due sends"):
        due = _in_batches(
            lambda: store.claim_due(broker.MAX_DELAY_S, limit), limit, deadline, store, config
        )
    with phase("stale rescue"):
        lanes = quiet_lanes(config)
        stale = _in_batches(
            lambda: store.claim_stale(
                config.pending_grace_seconds, config.queued_grace_seconds, lanes, limit
            ),
            limit,
            deadline,
            store,
            config,
        )
    if not due and not stale:
        return []
    records = due + stale
    logger.info(
        "reconciled tasks",
        extra={
            "due": len(due),
            "stale": len(stale),
            "queued": sum(r.status is Status.QUEUED for r in records),
        },
    )
    return records


def _in_batches(
    claim: Callable[[], list[TaskRecord]],
    limit: int,
    deadline: float,
    store: TaskStore,
    config: Settings,
) -> list[TaskRecord]:
    """Claim and send batch after batch, until a batch comes short or the time is spent."""
    done: list[TaskRecord] = []
    while True:
        batch = claim()
        done += _send(batch, store, config) if batch else []
        if len(batch) < limit or time.monotonic() >= deadline:
            return done


def prune(
    older_than: timedelta | None = None,
    payloads_older_than: timedelta | None = None,
    *,
    dry_run: bool = False,
    store: TaskStore | None = None,
    config: Settings | None = None,
) -> dict[str, int]:
    """Retention: delete tasks finished more than ``older_than`` ago (``RETENTION_DAYS``) and
    drop the payloads of tasks succeeded more than ``payloads_older_than`` ago
    (``PAYLOAD_RETENTION_DAYS``); never an unfinished task. What was removed, by kind."""
    config = config or settings()
    now = datetime.now(UTC)
    older_than = older_than or timedelta(days=config.retention_days)
    payloads_older_than = payloads_older_than or timedelta(days=config.payload_retention_days)
    counts = (store or default_store()).prune(
        now - older_than, now - payloads_older_than, dry_run=dry_run
    )
    if not dry_run:
        logger.info("pruned", extra=counts)
        metrics.count(metrics.PRUNED, "all", counts["tasks"])
    return counts


def quiet_lanes(config: Settings) -> list[str]:
    """Lanes whose queue has no message waiting: a task ``queued`` there for long has lost its
    message, rather than waiting its turn behind a backlog."""
    quiet = []
    for lane in Lane:
        try:
            if broker.waiting_messages(queue_url(lane, config)) == 0:
                quiet.append(lane.value)
        except Exception as exc:  # unknown depth: assume busy, resend nothing queued there
            logger.warning("queue depth unknown", extra={"lane": lane, "error": str(exc)})
    return quiet
