"""Structured JSON logs (Powertools Logger), shared by every part of tasklane.

Lines about a task carry ``task_id`` (pass ``extra=task_fields(...)``). Payloads and results are
never logged: they may hold personal data and may be megabytes long.
"""

from __future__ import annotations

import os
import uuid

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "tasklane"))


def task_fields(task_id: uuid.UUID | str, task: str | None = None, **more: object) -> dict:
    fields: dict[str, object] = {"task_id": str(task_id)}
    if task is not None:
        fields["task"] = task
    fields.update(more)
    return fields
