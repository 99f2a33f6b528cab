"""The application's tasks, one per lane to start from."""

from __future__ import annotations

import hashlib

from tasklane import task


# --8<-- [start:tasks]
@task(name="myapp.greet", lane="lambda")
def greet(payload: dict) -> dict:
    """Light work, run by the Lambda consumer."""
    return {"greeting": f"hello, {payload.get('name', 'world')}"}


@task(name="myapp.checksum", lane="celery", time_limit=600)
def checksum(payload: dict) -> dict:
    """Heavier work, run by the Celery workers."""
    return {"sha256": hashlib.sha256(payload["data"].encode()).hexdigest()}


# --8<-- [end:tasks]
