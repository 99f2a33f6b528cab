"""Calling the real function handlers with real event shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasklane.local.events import LambdaContext, http_event
from tasklane.local.functions import load_handler

ROOT = Path(__file__).resolve().parents[2]


def handler(function: str):
    return load_handler(ROOT / "functions" / function, "app.lambda_handler")


def call_api(
    method: str,
    path: str,
    body: Any = None,
    headers: dict | None = None,
    raw: str | None = None,
    authorizer: dict | None = None,
):
    """One HTTP request through the producer function, as ``authorizer`` (an identity from
    :mod:`tasklane.local.events`, or none as in the local stack); returns (status, headers,
    json body)."""
    if raw is None and body is not None:
        raw = json.dumps(body)
    hdrs = {"content-type": "application/json"} | (headers or {})
    path, _, query = path.partition("?")
    event = http_event(method, path, headers=hdrs, query=query, body=raw, authorizer=authorizer)
    response = handler("producer")(event, LambdaContext(function_name="producer"))
    parsed = json.loads(response["body"]) if response.get("body") else None
    return (
        response["statusCode"],
        {k.lower(): v for k, v in response.get("headers", {}).items()},
        parsed,
    )


def consume(records_event: dict, timeout: float = 30) -> dict:
    return handler("consumer")(
        records_event, LambdaContext(function_name="consumer", timeout_seconds=timeout)
    )


def submit(task: str, payload: Any) -> str:
    """POST /tasks through the producer; the new task's id."""
    status, _, body = call_api("POST", "/tasks", {"task": task, "payload": payload})
    assert status == 202, body
    return body["id"]


def get_task(task_id: str) -> dict:
    return call_api("GET", f"/tasks/{task_id}")[2]


def consumer_source(
    stack: Any, function: str = "consumer", url: str | None = None, timeout: float = 30, **kw: Any
):
    """The emulated event source of ``function`` on a test queue (the lambda lane by default)."""
    from tasklane.local.eventsource import queue_source

    return queue_source(
        stack.sqs, url or stack.lambda_queue, handler(function), function, timeout, **kw
    )


def insert_tasks(
    n: int, task: str = "test.echo", lane: str = "lambda", status: str = "queued", age_s: float = 0
) -> list[str]:
    """``n`` task rows written straight to the table, created one millisecond apart (the last
    is the newest); no message is sent."""
    import uuid

    from sqlalchemy import text
    from tasklane import database

    ids = [uuid.uuid4() for _ in range(n)]
    with database.engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, task, lane, status, payload, created_at, updated_at) "
                "SELECT id, :task, :lane, :status, to_jsonb(n), t, t FROM unnest("
                "CAST(:ids AS uuid[])) WITH ORDINALITY AS u(id, n), LATERAL (SELECT "
                "now() - make_interval(secs => :age + (:count - n) / 1000.0) AS t) AS at"
            ),
            {"ids": ids, "task": task, "lane": lane, "status": status, "age": age_s, "count": n},
        )
    return [str(i) for i in ids]
