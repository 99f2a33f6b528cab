"""A Celery result backend that reads tasklane's task table: no Redis, no second table.

Any Celery client configured with ``result_backend = "tasklane.results.TaskTableBackend"`` (and
``DATABASE_URL``, or ``DATABASE_SECRET_ARN`` in AWS) can call ``AsyncResult(task_id).state``,
``.result``, ``.ready()`` and ``.get(timeout=...)`` for tasks of either lane. tasklane itself
writes every outcome to Postgres, so storing through this backend does nothing.

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

import uuid
from typing import Any

from celery import states
from celery.backends.base import BaseBackend

from tasklane.errors import TaskNotFound
from tasklane.lifecycle import Status
from tasklane.store import TaskRecord


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
    """The meta dict Celery's result API reads, for one task (None: an unknown id)."""
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


class TaskTableBackend(BaseBackend):
    """Celery's result API over the task table (read-only: tasklane writes the outcomes)."""

    supports_native_join = False
    persistent = True

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.url = url

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        from tasklane.service import default_store

        try:
            record = default_store().get(uuid.UUID(str(task_id)))
        except (TaskNotFound, ValueError):
            record = None
        return celery_meta(str(task_id), record)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        return result  # tasklane has already written the outcome to the task's row

    def _forget(self, task_id: str) -> None:
        """Forgetting would delete the record of a task; tasklane keeps it."""

    def _save_group(self, group_id: str, result: Any) -> Any:
        raise NotImplementedError("tasklane tasks are submitted one by one or in batches")

    def _restore_group(self, group_id: str) -> Any:
        raise NotImplementedError("tasklane tasks are submitted one by one or in batches")

    def _delete_group(self, group_id: str) -> None:
        raise NotImplementedError("tasklane tasks are submitted one by one or in batches")
