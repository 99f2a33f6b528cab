"""How tasks and workflows look in the HTTP API's JSON: a task's summary, its detail, its
entry in a listing (never its result), a workflow with a page of its tasks.

The response models of :mod:`tasklane.schemas` describe these shapes; Powertools checks each
response against them.
"""

from __future__ import annotations

from typing import Any

from tasklane import reads, workflows
from tasklane.lifecycle import Status
from tasklane.store import TaskRecord


def summary(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "task": record.task,
        "lane": record.lane,
        "status": str(record.status),
    }


def detail(record: TaskRecord) -> dict[str, Any]:
    error = record.error
    if error:
        error = {k: error.get(k) for k in ("type", "message", "traceback")}
    return summary(record) | {
        "attempts": record.attempts,
        "result": record.result,
        "error": error,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "run_at": record.run_at,
        "workflow_id": str(record.workflow_id) if record.workflow_id else None,
        "payload_bytes": record.payload_bytes,
        "retry_at": record.retry_at,
        "unique_key": record.unique_key,
        "priority": record.priority or 0,
        # why a task that could run waits (a limit); its claim clears it
        "waiting_on": record.waiting_on
        if record.status in (Status.PENDING, Status.QUEUED, Status.WAITING)
        else None,
        "history": record.history or [],
    }


def with_input(item: dict[str, Any], shown: reads.Input) -> dict[str, Any]:
    """A task's detail and its input: ``payload`` (the JSON value; when larger than a read
    shows, the start of its JSON text, with ``payload_truncated``), ``payload_chars``."""
    return item | {
        "payload": shown.value,
        "payload_truncated": shown.truncated,
        "payload_chars": shown.chars,
        "payload_pruned": shown.pruned,
    }


def task_figures(found: list[dict[str, Any]], window_s: int) -> dict[str, Any]:
    """``GET /stats/tasks``: per task name, counts, runtimes in milliseconds, failure rate."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 3)

    return {
        "window_seconds": window_s,
        "tasks": [
            {
                "task": t["task"],
                "counts": t["counts"],
                "finished": t["finished"],
                "runtime_p50_ms": ms(t["p50"]),
                "runtime_p95_ms": ms(t["p95"]),
                "failure_rate": t["failed"] / t["finished"] if t["finished"] else None,
            }
            for t in found
        ],
    }


def workers_view(found: dict[str, Any], alive_within_s: float) -> dict[str, Any]:
    """``GET /workers``: each worker with ``alive`` (heard of within three beats)."""
    return {
        "workers": [
            {
                "name": w["name"],
                "host": w["host"],
                "pid": w["pid"],
                "queues": [q for q in w["queues"].split(",") if q],
                "concurrency": w["concurrency"],
                "active": w["active"] or [],
                "started_at": w["started_at"],
                "last_seen": w["last_seen"],
                "seen_seconds_ago": float(w["seen_seconds_ago"]),
                "alive": float(w["seen_seconds_ago"]) <= alive_within_s,
            }
            for w in found["workers"]
        ],
        "running": found["running"],
    }


def listed(record: TaskRecord) -> dict[str, Any]:
    """A task in a listing: its detail without the result and the error's traceback (a page
    of 500 fits in a response whatever the tasks hold; GET /tasks/{id} has the rest)."""
    item = detail(record)
    del item["result"], item["history"]
    if item["error"]:
        item["error"] = {k: v for k, v in item["error"].items() if k != "traceback"}
    return item


def workflow_view(
    view: reads.WorkflowView, start: int = 0, limit: int = workflows.MAX_TASKS
) -> dict[str, Any]:
    """A workflow, with its tasks from ``start``, ``limit`` of them (``next_cursor``: the
    rest). A result too large for a response is left out, saying so."""
    end = start + limit
    omitted = None
    if view.result_omitted_bytes is not None:
        omitted = (
            f"the result's parts are {view.result_omitted_bytes} bytes, over MAX_RESULT_BYTES: "
            "read each task's with GET /tasks/{id}"
        )
    return {
        "id": str(view.id),
        "status": view.status,
        "tasks": [
            summary(r) | {"after": (view.after or {}).get(r.id, [])} for r in view.tasks[start:end]
        ],
        "next_cursor": reads.cursor_of({"task": end}) if end < len(view.tasks) else None,
        "result": view.result,
        "result_omitted": omitted,
        "error": view.error,
        "created_at": view.created_at,
    }


def workflow_offset(cursor: str | None) -> int:
    """Where a page of a workflow's tasks starts."""

    def read(value: Any) -> int:
        if not isinstance(value, dict) or not isinstance(value.get("task"), int):
            raise ValueError(value)
        return max(0, value["task"])

    return 0 if cursor is None else reads.read_cursor(cursor, read)
