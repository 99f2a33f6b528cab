"""What clients ask of tasks: submit one, a batch or a workflow; cancel; retry.

Plain functions over the store and the sending path; the HTTP routes, the Python API and the
CLI call these and only shape their input and output. Reads are :mod:`tasklane.reads`; the
reconciler's pass is :mod:`tasklane.reconciler`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tasklane import broker, outbox, payloads, registry, unique, workflows
from tasklane.callers import Caller
from tasklane.config import Settings, settings
from tasklane.errors import (
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    UnknownTask,
)
from tasklane.ids import new_id
from tasklane.keys import checked_key
from tasklane.lanes import checked_priority
from tasklane.lifecycle import Status
from tasklane.logs import logger, task_fields
from tasklane.moments import in_range
from tasklane.reads import WorkflowView, get_task, get_workflow, scoped, workflow_id_of
from tasklane.sending import send
from tasklane.store import NewTask, TaskFilter, TaskRecord, TaskStore, default_store

if TYPE_CHECKING:  # the ORM is imported only by applications that pass a Session
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

BATCH_MAX = 100
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated request to run ``task`` on a payload (already serialized, size-checked),
    now or from ``run_at``; ``timing`` is that wish as asked (a delay, or a moment)."""

    task: str
    payload_json: str
    run_at: datetime | None = None
    timing: str | None = None
    #: Its unique key, window and the statuses they cover (:mod:`tasklane.unique`).
    unique_key: str | None = None
    unique_for: float | None = None
    unique_states: tuple[str, ...] = ()
    #: The keys its concurrency and rate limits count by (:mod:`tasklane.limits`).
    concurrency_key: str | None = None
    rate_key: str | None = None
    #: The key it runs in order with (:mod:`tasklane.limits`).
    ordering_key: str | None = None
    #: 0 to 9, the higher the sooner (:mod:`tasklane.lanes`).
    priority: int = 0

    @property
    def request_hash(self) -> str:
        digest = hashlib.sha256(self.task.encode())
        digest.update(b"\0")
        digest.update(self.payload_json.encode())
        if self.timing is not None:
            digest.update(b"\0" + self.timing.encode())
        if self.unique_key is not None:
            digest.update(b"\0unique:" + f"{self.unique_key}\0{self.unique_for}".encode())
        if self.priority:
            digest.update(f"\0priority:{self.priority}".encode())
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


def parse_submission(
    body: Any, config: Settings, timing: Timing | None = None, *, step: bool = False
) -> Submission:
    """Validate ``{"task": NAME, "payload": JSON}``: shape (400), task name (422), size (413).
    A workflow's ``step`` has no unique key (its steps are not deduplicated) nor limit key (it
    counts under its task's limit as a whole): a later step's input is not known yet."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    name = body.get("task")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'task' is required and must be a non-empty string")
    if "payload" not in body:
        raise InvalidRequest("'payload' is required (any JSON value)")
    extra = set(body) - {
        *("task", "payload", "delay_seconds", "run_at", "unique_key", "unique_for"),
        *("ordering_key", "priority"),
    }
    if extra:
        raise InvalidRequest(f"unexpected fields: {', '.join(sorted(extra))}")
    if body.get("delay_seconds") is not None or body.get("run_at") is not None:
        timing = due_at(body.get("delay_seconds"), body.get("run_at"))
    spec = registry.get(name)  # UnknownTask → 422
    payload_json = payloads.dumps(body["payload"])
    size = len(payload_json.encode())
    if size > config.max_payload_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes, the limit is {config.max_payload_bytes} (MAX_PAYLOAD_BYTES)"
        )
    key, window, states = (None, None, ()) if step else _uniqueness(spec, body)
    limited = spec.concurrency is not None and not step
    rated = spec.rate_limit is not None and not step
    return Submission(
        name,
        payload_json,
        None if timing is None else timing.run_at,
        None if timing is None else timing.asked,
        key,
        window,
        states,
        spec.concurrency.key_of(body["payload"]) if limited else None,
        spec.rate_limit.key_of(body["payload"]) if rated else None,
        None if step else _ordering_key(spec, body),
        _priority(spec, body),
    )


def _priority(spec: registry.Task, body: dict) -> int:
    """The call's priority, or the task's: a whole number from 0 to 9 (400 otherwise)."""
    given = body.get("priority")
    if given is None:
        return spec.priority
    try:
        return checked_priority(given)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _ordering_key(spec: registry.Task, body: dict) -> str | None:
    """The key a submission runs in order with: the call's, or the task's made of the
    payload. Only a task declared with ``ordering_key`` is claimed in order."""
    given = body.get("ordering_key")
    if spec.ordering is None:
        if given is not None:
            raise InvalidRequest(
                f"ordering_key: task {spec.name!r} is not declared with an ordering_key"
            )
        return None
    return (
        checked_key(given, "ordering_key")
        if given is not None
        else spec.ordering.key_of(body["payload"])
    )


def _uniqueness(
    spec: registry.Task, body: dict
) -> tuple[str | None, float | None, tuple[str, ...]]:
    """A submission's unique key, window and covered statuses: the call's ``unique_key`` (a
    key as is) and ``unique_for`` over the task's declaration (its key made of the payload)."""
    declared = spec.unique
    window = body.get("unique_for")
    if body.get("unique_key") is not None:
        key = unique.given_key(body["unique_key"])
    elif declared is not None:
        key = declared.key_of(body["payload"])
    elif window is not None:
        raise InvalidRequest("unique_for needs a unique_key (the call's, or the task's own)")
    else:
        return None, None, ()
    window = (
        unique.checked_window(window)
        if window is not None
        else (declared.within_s if declared else None)
    )
    states = declared.states if declared is not None else unique.LIVE
    return key, window, tuple(s.value for s in states)


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


def new_task(sub: Submission) -> NewTask:
    """The row for a submission: a fresh id, the task's lane and attempt limit."""
    spec = registry.get(sub.task)
    return NewTask(
        new_id(),
        spec.name,
        spec.lane.value,
        sub.payload_json,
        spec.max_attempts,
        sub.run_at,
        sub.unique_key,
        sub.unique_for,
        sub.unique_states,
        sub.concurrency_key,
        sub.rate_key,
        sub.ordering_key,
        sub.priority,
    )


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
    if record.id != new.id:  # a unique task's duplicate: the live one, already on its way
        logger.info("duplicate of a unique task", extra=task_fields(record.id, record.task))
        return record, False
    if connection is not None:
        outbox.send_after_commit(connection, [record])
    else:
        (record,) = send([record], store, config)
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
                if (answered := [r.id for r in records]) != ids:
                    store.answered(use, "batch", idempotency_key, owner, answered)
        if not use.first:
            return _replayed(use.request_hash, digest, lambda: store.get_many(use.ids)), False
    # a unique task's duplicate is the task it matched: only the new ones are sent
    ours = {t.id for t in new}
    fresh = list({r.id: r for r in records if r.id in ours}.values())
    if connection is not None:
        outbox.send_after_commit(connection, fresh)
    else:
        sent = {r.id: r for r in send(fresh, store, config)}
        records = [sent.get(r.id, r) for r in records]
    logger.info("batch submitted", extra={"count": len(fresh)})
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
    records, more = store.requeue_failed_matching(scoped(where, caller), limit)
    records = send(records, store, config or settings()) if records else []
    logger.info("tasks retried in bulk", extra={"count": len(records), "more": more})
    return records, more


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
        sub = parse_submission({"task": step.task, "payload": payload}, config, step=True)
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
        sent = {r.id: r for r in send(first, store, config)}
        records = [sent.get(r.id, r) for r in records]
    logger.info("workflow submitted", extra={"workflow_id": str(planned.id), "count": len(new)})
    return planned.id, records, True


def cancel_workflow(
    workflow_id: str | uuid.UUID, *, store: TaskStore | None = None, caller: Caller | None = None
) -> WorkflowView:
    """Cancel what has not run: waiting tasks now, running ones asked to stop."""
    store = store or default_store()
    get_workflow(workflow_id, store=store, caller=caller)  # one the caller may see
    count = store.cancel_workflow(workflow_id_of(workflow_id))
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
    (record,) = send([record], store, config or settings())
    logger.info("task retried", extra=task_fields(record.id, record.task))
    return record
