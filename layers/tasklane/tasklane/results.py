"""Celery's result backend on the task table: no Redis, no second store.

Any Celery app configured with ``result_backend = "tasklane.results.TaskTableBackend"`` (and
``DATABASE_URL``, or ``DATABASE_SECRET_ARN`` in AWS) keeps its results in tasklane's Postgres:

- **Every Celery task's outcome** is a row of the ``tasks`` table, claim-checked or not: its
  status in tasklane's terms (so the console, ``GET /tasks`` and retention see it), its result
  in ``result`` (a failure in ``error``), and what Celery's result API reads beyond those in
  ``celery``: the Celery state (custom states too), traceback, children, group, parent and the
  extended request fields. Once a task has succeeded, later writes for it are ignored, as
  Celery's own backends do, so a duplicate run cannot replace its result.
- **tasklane's own tasks** are read, never written: their executor records their outcomes.
- **Groups** (``GroupResult.save``/``restore``/``delete``) and **chords** live in
  ``celery_groups``. A chord's fan-in is a row lock: each member, as it ends, locks its chord's
  row, records its id in ``celery_chord_parts`` (a repeat of a member records nothing) and
  counts itself; the member that completes the count marks the chord fired in the same
  transaction, and only it sends the body. No ``chord_unlock`` task polls.
- ``forget()`` deletes a Celery task's row; ``cleanup()`` (Celery's ``backend_cleanup``) deletes
  the Celery results older than ``result_expires``.

=============================  =============================================
tasklane status                Celery state
=============================  =============================================
waiting, pending, scheduled,   PENDING (RETRY once an attempt has failed)
queued
running                        STARTED
succeeded                      SUCCESS (``.result`` is the task's result)
failed                         FAILURE (``.get()`` raises the task's error)
cancelled                      REVOKED (``.get()`` raises TaskRevokedError)
unknown id                     PENDING, as Celery reports ids it never saw
=============================  =============================================
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from celery import states
from celery.backends.base import BaseBackend, _create_chord_error_with_cause
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result, result_from_tuple
from celery.utils.log import get_logger
from sqlalchemy import and_, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.config import settings
from tasklane.errors import ResultTooLarge, TaskNotFound
from tasklane.lifecycle import Status
from tasklane.payloads import check_result_size
from tasklane.store import (
    JsonText,
    TaskRecord,
    celery_chord_parts,
    celery_groups,
    default_store,
    ended_history,
    tasks,
)

logger = get_logger(__name__)

#: What Celery's meta of a task is made from.
META_COLUMNS = (tasks.c.celery, tasks.c.result, tasks.c.status, tasks.c.lane)

#: Celery task ids that are not UUIDs (``task_id="report-7"``) map to a UUID of this namespace.
ID_NAMESPACE = uuid.UUID("5f0c1b7e-2f5d-4c1e-9c8a-7a3d2b1e0f42")

#: A Celery state as a tasklane status (a custom state, from ``update_state``: running).
STATUS_OF_STATE = {
    states.SUCCESS: Status.SUCCEEDED,
    states.FAILURE: Status.FAILED,
    states.REVOKED: Status.CANCELLED,
    states.STARTED: Status.RUNNING,
    states.RETRY: Status.QUEUED,
    states.PENDING: Status.QUEUED,
    states.RECEIVED: Status.QUEUED,
    states.REJECTED: Status.FAILED,
    states.IGNORED: Status.SUCCEEDED,
}


#: A retry's error when ``self.retry()`` names none (``exc=``): the history says what happened.
RETRY_ASKED = {"type": "Retry", "message": "the task asked for a retry (self.retry())"}


def row_id(task_id: Any) -> uuid.UUID:
    """The ``tasks.id`` of a Celery task id (its UUID, or one derived from a non-UUID id)."""
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        return uuid.uuid5(ID_NAMESPACE, str(task_id))


def celery_state(record: TaskRecord) -> str:
    if record.status is Status.SUCCEEDED:
        return states.SUCCESS
    if record.status is Status.FAILED:
        return states.FAILURE
    if record.status is Status.CANCELLED:
        return states.REVOKED
    if record.status is Status.RUNNING:
        return states.STARTED
    if record.status is Status.QUEUED and record.attempts > 0:
        return states.RETRY
    return states.PENDING


def celery_meta(task_id: str, record: TaskRecord | None) -> dict[str, Any]:
    """The meta dict Celery's result API reads, for one of tasklane's own tasks (None: an
    unknown id)."""
    meta: dict[str, Any] = {
        "task_id": task_id,
        "status": states.PENDING,
        "result": None,
        "traceback": None,
        "children": [],
        "date_done": None,
    }
    if record is None:
        return meta
    meta["status"] = celery_state(record)
    error = record.error or {}
    if meta["status"] == states.REVOKED:
        meta["result"] = {
            "exc_type": "TaskRevokedError",
            "exc_module": "celery.exceptions",
            "exc_message": [error.get("message") or "cancelled"],
        }
    elif meta["status"] in (states.FAILURE, states.RETRY) and error:
        meta["result"] = {
            "exc_type": error.get("type") or "Exception",
            "exc_module": error.get("module"),
            "exc_message": [error.get("message", "")],
        }
        meta["traceback"] = error.get("traceback")
    elif meta["status"] == states.SUCCESS:
        meta["result"] = record.result
    if record.status.terminal:
        meta["date_done"] = record.updated_at
    return meta


def _error_of(result: Any, traceback: Any) -> dict | None:
    """A Celery failure as tasklane's ``error`` (type, module, message, traceback)."""
    if not isinstance(result, dict) or "exc_type" not in result:
        return None
    message = result.get("exc_message")
    if isinstance(message, list | tuple):
        message = ", ".join(str(m) for m in message)
    return {
        "type": result.get("exc_type"),
        "module": result.get("exc_module"),
        "message": str(message if message is not None else ""),
        "traceback": traceback,
    }


def _engine() -> Any:
    from tasklane.database import engine

    return engine()


class TaskTableBackend(BaseBackend):
    """Celery's result API over the task table (see the module)."""

    supports_native_join = False
    persistent = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.url = url

    # -- tasks ---------------------------------------------------------------------------------
    def _encoded(self, value: Any) -> Any:
        """A value as Celery's serializer encodes it, made plain JSON for a ``jsonb`` column."""
        return json.loads(self.encode(value))

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        doc = self._encoded(meta)
        if state == states.SUCCESS:  # every read of it must fit in a response
            try:
                check_result_size(json.dumps(doc.get("result")), settings().max_result_bytes)
            except ResultTooLarge as too_large:
                return self._store_result(task_id, too_large, states.FAILURE, None, request)
        doc["task_id"] = str(task_id)
        status = STATUS_OF_STATE.get(state, Status.RUNNING)
        stored = doc.pop("result") if state == states.SUCCESS else None
        values = {
            "status": status.value,
            "result": stored,
            "error": _error_of(doc.get("result"), traceback)
            if state in states.EXCEPTION_STATES
            else None,
            "celery": doc,
            "updated_at": func.now(),
            "finished_at": func.now() if status.terminal else None,
        }
        if status is Status.RUNNING:
            values["started_at"] = func.now()
        name = getattr(request, "task", None) or doc.get("name") or ""
        statement = pg_insert(tasks).values(
            id=row_id(task_id), task=str(name)[:200], lane="celery", **values
        )
        # tasklane's own tasks (celery IS NULL) are their executor's to write; a success stays.
        # what the row's Celery meta holds besides the outcome (the message's priority) stays
        merged = tasks.c.celery.op("||", return_type=tasks.c.celery.type)(
            literal(json.dumps(doc), JsonText())
        )
        # the run's end is an attempt of the row's history (not a STARTED or a custom state)
        error = values["error"] or (RETRY_ASKED if state == states.RETRY else None)
        ended = {} if status is Status.RUNNING else {"history": ended_history(status, error)}
        statement = statement.on_conflict_do_update(
            index_elements=[tasks.c.id],
            set_=values | {"celery": merged} | ended,
            where=and_(tasks.c.celery.is_not(None), tasks.c.status != Status.SUCCEEDED.value),
        )
        with _engine().begin() as conn:
            conn.execute(statement)
        return result

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        with _engine().connect() as conn:
            row = conn.execute(select(*META_COLUMNS).where(tasks.c.id == row_id(task_id))).first()
        return self._meta_of(task_id, row)

    def _meta_of(self, task_id: str, row: Any) -> dict[str, Any]:
        """Celery's meta of a task, from its row (None: an id never seen)."""
        if row is None:
            return celery_meta(str(task_id), None)
        if row.celery is None or (
            "status" not in row.celery and row.lane == "lambda" and Status(row.status).terminal
        ):  # tasklane's own task, or an adopted one the lambda lane ran: the executor's record
            return self._native_meta(task_id)
        if "status" not in row.celery:  # claim-checked, and Celery has stored nothing yet
            return celery_meta(str(task_id), None)
        doc = dict(row.celery)
        if doc["status"] == states.SUCCESS:
            doc["result"] = row.result
        return self.meta_from_decoded(self.decode(json.dumps(doc)))

    def _native_meta(self, task_id: str) -> dict[str, Any]:
        try:
            record = default_store().get(row_id(task_id))
        except TaskNotFound:
            record = None
        return celery_meta(str(task_id), record)

    def _forget(self, task_id: str) -> None:
        """Forget a Celery task's result: its row goes (tasklane's own tasks keep theirs)."""
        with _engine().begin() as conn:
            conn.execute(
                delete(tasks).where(tasks.c.id == row_id(task_id), tasks.c.celery.is_not(None))
            )

    def cleanup(self) -> None:
        """Celery's ``backend_cleanup``: results older than ``result_expires`` go."""
        if not self.expires:
            return
        before = self.app.now() - timedelta(seconds=self.expires)
        with _engine().begin() as conn:
            conn.execute(
                delete(tasks).where(
                    tasks.c.celery.is_not(None),
                    tasks.c.finished_at.is_not(None),
                    tasks.c.finished_at < before,
                )
            )
            old = select(celery_groups.c.id).where(celery_groups.c.created_at < before)
            conn.execute(delete(celery_chord_parts).where(celery_chord_parts.c.group_id.in_(old)))
            conn.execute(delete(celery_groups).where(celery_groups.c.created_at < before))

    # -- groups --------------------------------------------------------------------------------
    def _save_group(self, group_id: str, result: Any) -> Any:
        encoded = self._encoded(result.as_tuple())
        statement = pg_insert(celery_groups).values(id=str(group_id), result=encoded)
        with _engine().begin() as conn:
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[celery_groups.c.id], set_={"result": encoded}
                )
            )
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        with _engine().connect() as conn:
            stored = conn.execute(
                select(celery_groups.c.result).where(celery_groups.c.id == str(group_id))
            ).scalar()
        if stored is None:
            return None
        return {"result": result_from_tuple(self.decode(json.dumps(stored)), self.app)}

    def _delete_group(self, group_id: str) -> None:
        with _engine().begin() as conn:
            conn.execute(delete(celery_groups).where(celery_groups.c.id == str(group_id)))
            conn.execute(
                delete(celery_chord_parts).where(celery_chord_parts.c.group_id == str(group_id))
            )

    # -- chords --------------------------------------------------------------------------------
    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        """Save the header as a group: its members' ends count on that row (no polling)."""
        self.ensure_chords_allowed()
        header_result = self.app.GroupResult(*header_result_args)
        header_result.save(backend=self)
        return header_result

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        statement = pg_insert(celery_groups).values(
            id=str(group_id), result=[None, None], chord_size=chord_size
        )
        with _engine().begin() as conn:
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[celery_groups.c.id], set_={"chord_size": chord_size}
                )
            )

    def add_to_chord(self, chord_id: str, result: Any) -> None:
        """A member replaced itself (``Task.replace``) with one more task to wait for."""
        with _engine().begin() as conn:
            conn.execute(
                update(celery_groups)
                .where(celery_groups.c.id == str(chord_id))
                .values(chord_size=func.coalesce(celery_groups.c.chord_size, 0) + 1)
            )

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """A chord's member has ended: count it under the chord's row lock; the last fires.

        One round trip's worth of work per member, whatever the header's size: the member is
        recorded once (``celery_chord_parts``), the count kept on the chord's row; the
        header's results are read only by the member that fires."""
        gid = request.group
        if not gid or not request.chord:
            return
        callback = maybe_signature(request.chord, app=self.app)
        with _engine().begin() as conn:
            row = conn.execute(
                select(
                    celery_groups.c.chord_size,
                    celery_groups.c.done,
                    celery_groups.c.fired_at,
                    func.jsonb_array_length(celery_groups.c.result[1]).label("members"),
                )
                .where(celery_groups.c.id == str(gid))
                .with_for_update()
            ).first()
            if row is None or row.members is None:
                fire = None
            elif row.fired_at is not None:
                return  # the chord has fired: a late repeat of one of its members
            else:
                counted = conn.execute(
                    pg_insert(celery_chord_parts)
                    .values(group_id=str(gid), member_id=str(request.id))
                    .on_conflict_do_nothing()
                ).rowcount
                if not counted:
                    return  # this member's end was counted already (a duplicate run)
                size = request.chord.get("chord_size") or row.chord_size or row.members
                fire = row.done + 1 >= size
                conn.execute(
                    update(celery_groups)
                    .where(celery_groups.c.id == str(gid))
                    .values(done=row.done + 1, fired_at=func.now() if fire else None)
                )
        if fire is None:
            self.chord_error_from_stack(callback, ChordError(f"GroupResult {gid} does not exist"))
        elif fire:
            self._fire(gid, self.restore_group(gid, cache=False), callback)

    def _join(self, deps: GroupResult) -> list:
        """The header's results in order, read in one query (Celery's ``join`` reads them one
        by one); raises the first failure, as ``join(propagate=True)`` does."""
        ids = [r.id for r in deps.results]
        if not all(type(r) is self.app.AsyncResult for r in deps.results):  # nested groups
            with allow_join_result():
                return deps.join(timeout=self.app.conf.result_chord_join_timeout, propagate=True)
        with _engine().connect() as conn:
            rows = {
                str(row.id): row
                for row in conn.execute(
                    select(tasks.c.id, *META_COLUMNS).where(
                        tasks.c.id.in_([row_id(i) for i in ids])
                    )
                )
            }
        values = []
        for task_id in ids:
            meta = self._meta_of(task_id, rows.get(str(row_id(task_id))))
            if meta["status"] in states.PROPAGATE_STATES:
                raise self.exception_to_python(meta["result"])
            if meta["status"] not in states.READY_STATES:  # not expected: Celery's way, then
                with allow_join_result():
                    return deps.join(
                        timeout=self.app.conf.result_chord_join_timeout, propagate=True
                    )
            values.append(meta["result"])
        return values

    def _fire(self, gid: str, deps: GroupResult, callback: Any) -> None:
        """Join the header's results and send the body (only the last member gets here)."""
        try:
            ret = self._join(deps)
        except Exception as exc:
            # The body fails with its dependency's own error, as a Celery client of a chord
            # whose fan-in is polled (chord_unlock) sees it: the header's failure, reached
            # through the body's parent, is raised before the body is failed. ChordError is
            # for a body that could not be sent.
            logger.exception("Chord %r: a dependency raised %r", gid, exc)
            self.chord_error_from_stack(callback, exc)
            return
        try:
            self.app.amqp._retry_publish(callback.delay, ret)
        except Exception as exc:
            logger.exception("Chord %r raised: %r", gid, exc)
            self.chord_error_from_stack(
                callback,
                _create_chord_error_with_cause(
                    message=f"Callback error: {exc!r}", original_exc=exc
                ),
            )


class TaskTableReader(TaskTableBackend):
    """tasklane's own worker app's backend: it reads as :class:`TaskTableBackend` does, and
    writes nothing, since the executor records every outcome of tasklane's tasks (Celery's
    consumer would otherwise record, for instance, a task unknown to one worker as failed)."""

    def _store_result(self, task_id: str, result: Any, state: str, *args: Any, **kw: Any) -> Any:
        return result
