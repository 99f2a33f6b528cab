"""Every failure tasklane names. Adapters map these to HTTP statuses or queue outcomes."""

from __future__ import annotations

import uuid


class TasklaneError(Exception):
    """Base class. ``code`` is the stable, machine-readable name used in API error bodies."""

    code = "error"


class ConfigurationError(TasklaneError):
    code = "configuration_error"


class InvalidRequest(TasklaneError):
    """Malformed input from a client (HTTP 400)."""

    code = "invalid_request"


class UnknownTask(TasklaneError):
    """No registered task has that name (HTTP 422; poison on a queue)."""

    code = "unknown_task"


class PayloadTooLarge(TasklaneError):
    code = "payload_too_large"


class IdempotencyConflict(TasklaneError):
    """An Idempotency-Key was reused with a different request body."""

    code = "idempotency_conflict"


class TaskNotFound(TasklaneError):
    code = "not_found"


class InvalidTransition(TasklaneError):
    """The task's status does not allow the operation (e.g. retrying a task that did not fail)."""

    code = "conflict"


class StoreUnavailable(TasklaneError):
    """Postgres cannot be reached; the caller should retry later (HTTP 503, record not acked)."""

    code = "database_unavailable"


class PayloadUnreadable(TasklaneError):
    """A stored payload this process cannot load: a failure of its task, never retried."""

    code = "payload_unreadable"


class Cancelled(TasklaneError):
    """Raised in a running task that was asked to stop (``current_task().check_cancelled()``);
    its run then ends ``cancelled``."""

    code = "cancelled"


class TimeLimitExceeded(TasklaneError):
    """A task ran past its ``time_limit``; recorded as a failed attempt."""

    code = "time_limit_exceeded"


class TaskFailed(TasklaneError):
    """The task ended ``failed``; ``type`` and ``message`` are its stored error."""

    code = "task_failed"

    def __init__(self, task_id: uuid.UUID, error: dict | None) -> None:
        error = error or {}
        self.task_id = task_id
        self.type = error.get("type") or "Error"
        self.message = error.get("message") or ""
        self.traceback = error.get("traceback")
        super().__init__(f"task {task_id} failed: {self.type}: {self.message}")


class AttemptNotDone(TasklaneError):
    """A Celery worker's attempt failed or could not run now; its message is left for SQS to
    redeliver. Celery's expected exception for claim-checked tasks: the executor has logged
    the failure with the task's own traceback, so Celery logs this one line at INFO, without
    a traceback of tasklane's frames."""

    code = "attempt_not_done"


class MessageDecodeError(TasklaneError):
    """A queue message is not a Celery protocol-2 JSON message. Poison: never retried."""

    code = "undecodable_message"


class ResultNotStorable(Exception):
    """A run's result cannot be stored (not JSON, or not what Postgres's jsonb holds): the
    task fails, not retried (the same run would make it again)."""


class ResultTooLarge(ResultNotStorable):
    """A run's result is over ``MAX_RESULT_BYTES``: every read of it must fit in a response
    (keep a large output elsewhere, S3 say, and return where it is)."""
