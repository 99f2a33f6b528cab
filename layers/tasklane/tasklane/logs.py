"""Structured JSON logs (Powertools Logger), shared by every part of tasklane.

Lines about a task carry ``task_id`` (pass ``extra=task_fields(...)``). Payloads and results are
never logged: they may hold personal data and may be megabytes long.
"""

from __future__ import annotations

import os
import uuid

from aws_lambda_powertools import Logger

#: Set by whoever runs the process: Powertools' own variable, or Lambda's advanced logging.
_CHOSEN = ("POWERTOOLS_LOG_LEVEL", "AWS_LAMBDA_LOG_LEVEL")


def _chosen_level() -> str | None:
    return next((os.environ[name] for name in _CHOSEN if os.environ.get(name)), None)


#: INFO where tasklane does the work (a Lambda function; a Celery worker calls :func:`serve`),
#: WARNING in an application's own process, which only submits: a line per submit is noise in
#: someone else's logs (POWERTOOLS_LOG_LEVEL=INFO brings it back).
logger = Logger(
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "tasklane"),
    level=_chosen_level() or ("INFO" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "WARNING"),
)


def serve() -> None:
    """This process runs tasks (a Celery worker): log what it does at INFO, unless a level
    was chosen, and each line once: tasklane's handler writes it, so it does not go on to the
    root logger's handlers too (Celery's would print it again, in its own format)."""
    if _chosen_level() is None:
        logger.setLevel("INFO")
    logger._logger.propagate = False


def task_fields(task_id: uuid.UUID | str, task: str | None = None, **more: object) -> dict:
    fields: dict[str, object] = {"task_id": str(task_id)}
    if task is not None:
        fields["task"] = task
    fields.update(more)
    return fields
