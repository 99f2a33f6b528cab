"""tasklane: durable background tasks on AWS, with Celery-compatible messages.

Write a task once; run it in the ``lambda`` lane (a Lambda function on SQS) or the ``celery``
lane (Celery workers on SQS). Postgres holds every task's payload, status and result; SQS carries
only a Celery protocol-2 message naming the task's id (the claim-check pattern).

    from tasklane import task

    @task(name="text.wordcount")
    def wordcount(payload): ...

    wordcount.delay({"text": "hello"}).get(timeout=30)

The submitting API (``submit``, ``submit_many``, ``TaskHandle``, ``TaskFailed``) is imported on
first use, so a module that only defines tasks, or a function that never submits, does not pay
for it at start.
"""

from typing import Any

from tasklane.errors import (
    Cancelled,
    IdempotencyConflict,
    InvalidRequest,
    PayloadTooLarge,
    StoreUnavailable,
    TasklaneError,
    TaskNotFound,
    UnknownTask,
)
from tasklane.periodic import Schedule
from tasklane.registry import Task, task
from tasklane.workflows import chain, chord, group

_CLIENT = ("submit", "submit_many", "TaskHandle", "TaskFailed", "TaskCancelled", "WorkflowHandle")

__all__ = [
    "Cancelled",
    "IdempotencyConflict",
    "InvalidRequest",
    "PayloadTooLarge",
    "Schedule",
    "StoreUnavailable",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "TaskNotFound",
    "TasklaneError",
    "UnknownTask",
    "WorkflowHandle",
    "chain",
    "chord",
    "current_task",
    "group",
    "submit",
    "submit_many",
    "task",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from tasklane import client

        return getattr(client, name)
    if name == "current_task":
        from tasklane.executor import current_task

        return current_task
    raise AttributeError(f"module 'tasklane' has no attribute {name!r}")
