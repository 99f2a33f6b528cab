"""The HTTP API (API Gateway HTTP API, payload format 2.0), on Powertools' event handler.

Routes parse, call :mod:`tasklane.service` and shape the response. Every error leaves as
``{"error": {"code", "message"}}`` with its status, mapped once below; nothing leaves as a stack
trace.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types

from tasklane import service
from tasklane.config import settings
from tasklane.errors import (
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    PayloadTooLarge,
    StoreUnavailable,
    TasklaneError,
    TaskNotFound,
    UnknownTask,
)
from tasklane.logs import logger
from tasklane.store import TaskRecord

app = APIGatewayHttpResolver()

STATUS_OF: dict[type[TasklaneError], int] = {
    InvalidRequest: 400,
    TaskNotFound: 404,
    InvalidTransition: 409,
    PayloadTooLarge: 413,
    UnknownTask: 422,
    IdempotencyConflict: 422,
    StoreUnavailable: 503,
}
IDEMPOTENCY_KEY_MAX = 255


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUIDs


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, default=_json_default, ensure_ascii=False),
        headers=headers,
    )


def error_response(status: int, code: str, message: str) -> Response:
    return _json(status, {"error": {"code": code, "message": message}})


def summary(record: TaskRecord) -> dict[str, Any]:
    return {"id": record.id, "task": record.task, "lane": record.lane, "status": record.status}


def detail(record: TaskRecord) -> dict[str, Any]:
    error = record.error
    if error:  # the traceback stays in the database; clients get type and message
        error = {"type": error.get("type"), "message": error.get("message")}
    return summary(record) | {
        "attempts": record.attempts,
        "result": record.result,
        "error": error,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _body() -> Any:
    raw = app.current_event.decoded_body
    if not raw:
        raise InvalidRequest("the request body is empty; send JSON")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


def _idempotency_key() -> str | None:
    key = app.current_event.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
    return key


@app.post("/tasks")
def submit_task() -> Response:
    key = _idempotency_key()
    record, created = service.submit(
        service.parse_submission(_body(), settings()), idempotency_key=key
    )
    return _json(202 if created else 200, summary(record), {"Location": f"/tasks/{record.id}"})


@app.post("/tasks/batch")
def submit_batch() -> Response:
    records = service.submit_batch(service.parse_batch(_body(), settings()))
    return _json(202, {"tasks": [summary(r) for r in records]})


@app.get("/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    return _json(200, detail(service.get_task(task_id)))


@app.post("/tasks/<task_id>/retry")
def retry_task(task_id: str) -> Response:
    record = service.retry_task(task_id)
    return _json(202, summary(record), {"Location": f"/tasks/{record.id}"})


@app.exception_handler(TasklaneError)
def handle_tasklane_error(exc: TasklaneError) -> Response:
    status = next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), 500)
    if status >= 500:
        logger.warning("request failed", extra={"code": exc.code, "error": str(exc)})
    return error_response(
        status, exc.code, str(exc) if status < 500 or status == 503 else "internal error"
    )


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error")
    return error_response(500, "internal_error", "internal error")


@app.not_found
def handle_not_found(exc: Exception) -> Response:
    return error_response(
        404, "not_found", f"no route for {app.current_event.http_method} {app.current_event.path}"
    )


def handle(event: dict, context: Any) -> dict:
    """Resolve one HTTP API event; the producer function's whole job."""
    return app.resolve(event, context)
