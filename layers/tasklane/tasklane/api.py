"""The HTTP API (API Gateway HTTP API, payload format 2.0), on Powertools' event handler.

Powertools validates requests and responses against the pydantic models of
:mod:`tasklane.schemas` and describes them in an OpenAPI document (``GET /openapi.json``,
Swagger UI at ``/docs``). Routes call :mod:`tasklane.service` (changes) and
:mod:`tasklane.reads`, and shape the response (:mod:`tasklane.views`). Every
error leaves as ``{"error": {"code", "message"}}`` with its status, mapped once below; nothing
leaves as a stack trace.
"""

from __future__ import annotations

import base64
import functools
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from tasklane import callers, reads, service, views, workflows
from tasklane.callers import Caller, NotAuthenticated
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
from tasklane.heartbeat import HEARTBEAT_S
from tasklane.lifecycle import Status
from tasklane.logs import logger
from tasklane.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    LaneName,
    Moment,
    RetryRequest,
    RetryResponse,
    Stats,
    SubmitRequest,
    TaskDetail,
    TaskPage,
    TaskStats,
    TaskStatus,
    TaskSummary,
    WorkersView,
    WorkflowCreated,
    WorkflowDetail,
    WorkflowNode,
)
from tasklane.store import TaskFilter

TITLE = "tasklane"
VERSION = "1.0.0"
app = APIGatewayHttpResolver(enable_validation=True)

STATUS_OF: dict[type[TasklaneError], int] = {
    InvalidRequest: 400,
    NotAuthenticated: 401,
    TaskNotFound: 404,
    InvalidTransition: 409,
    PayloadTooLarge: 413,
    UnknownTask: 422,
    IdempotencyConflict: 422,
    StoreUnavailable: 503,
}
IDEMPOTENCY_KEY_MAX = 255


JSON = "application/json"
ERRORS = {
    400: "Malformed JSON or a body that does not match the schema",
    401: "No caller identity where the API requires one (a route without its authorizer)",
    404: "No such task (or workflow)",
    409: "The task's status does not allow this (retry of a task that did not fail, cancel of a "
    "finished one)",
    413: "Payload over MAX_PAYLOAD_BYTES",
    422: "Unknown task name, or an Idempotency-Key reused with another body",
    503: "Postgres unavailable; nothing was stored or sent",
}


def _errors(*statuses: int) -> dict[int, dict]:
    """Route ``responses=`` for error statuses, all with the error shape."""
    return {
        s: {"description": ERRORS[s], "content": {JSON: {"model": ErrorResponse}}} for s in statuses
    }


def _described(status: int) -> dict:
    """The same, as it appears in the generated document."""
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"description": ERRORS[status], "content": {JSON: {"schema": ref}}}


def caller() -> Caller:
    """Who makes the current request: the identity API Gateway authenticated (IAM or JWT),
    or the local stack's one operator (:mod:`tasklane.callers`). Worked out once per request,
    by :func:`handle`, before routing. A route reached without one (an event whose routeKey
    names a route served without an identity, but whose path is another) is refused, never
    served as trusted code."""
    who = app.context.get("caller")
    if not isinstance(who, Caller):
        raise NotAuthenticated("this route needs a caller identity")
    return who


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


#: The ``Idempotency-Key`` header of the routes that create: the same key and body return what
#: the first request created (200); the same key with another body is refused (422).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="idempotency-key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=r"^\S(.*\S)?$",
        description="Makes the request safe to retry: the same key and body return what the "
        "first request created",
    ),
]


# Routes have no return annotation: Powertools would take it for the response model, and each
# response is described in ``responses=`` instead.
@app.post(
    "/tasks",
    summary="Submit a task",
    description="Stores the payload in Postgres and queues a claim-check message in the task's "
    "lane. With an Idempotency-Key, the same key and body return the same task (200).",
    responses={
        202: {
            "description": "Stored and queued (or pending a re-send)",
            "content": {"application/json": {"model": TaskSummary}},
        },
        200: {
            "description": "Replay of an Idempotency-Key",
            "content": {"application/json": {"model": TaskSummary}},
        },
        **_errors(400, 413, 422, 503),
    },
)
def submit_task(body: Annotated[SubmitRequest, Body()], idempotency_key: IdempotencyKey = None):
    submission = service.parse_submission(body.model_dump(), settings())
    record, created = service.submit(
        submission, idempotency_key=idempotency_key, owner=caller().owner
    )
    return _json(
        202 if created else 200, views.summary(record), {"Location": f"/tasks/{record.id}"}
    )


@app.post(
    "/tasks/batch",
    summary="Submit up to 100 tasks",
    description="One multi-row insert, then SendMessageBatch calls. With an Idempotency-Key, "
    "the same key and body return the same tasks (200).",
    responses={
        202: {
            "description": "Stored and queued",
            "content": {"application/json": {"model": BatchResponse}},
        },
        200: {
            "description": "Replay of an Idempotency-Key: the first request's tasks",
            "content": {"application/json": {"model": BatchResponse}},
        },
        **_errors(400, 413, 422, 503),
    },
)
def submit_batch(body: Annotated[BatchRequest, Body()], idempotency_key: IdempotencyKey = None):
    records, created = service.submit_batch(
        service.parse_batch(body.model_dump(), settings()),
        idempotency_key=idempotency_key,
        owner=caller().owner,
    )
    return _json(202 if created else 200, {"tasks": [views.summary(r) for r in records]})


@app.get(
    "/tasks",
    summary="Find tasks: newest first, filtered, a page at a time",
    description="Keyset pagination: pass the page's next_cursor as cursor for the next page. "
    "Pages hold still while tasks arrive (new ones come before the first page).",
    responses={
        200: {"description": "One page", "content": {JSON: {"model": TaskPage}}},
        **_errors(400, 503),
    },
)
def list_tasks(
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
    task: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only this task name; a trailing * matches a prefix (images.*)",
        ),
    ] = None,
    lane: Annotated[LaneName | None, Query(description="Only this lane")] = None,
    created_after: Annotated[
        Moment | None, Query(description="Created after this moment (RFC 3339)")
    ] = None,
    created_before: Annotated[
        Moment | None, Query(description="Created before this moment (RFC 3339)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=reads.PAGE_MAX, description="Page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="The previous page's next_cursor")
    ] = None,
):
    where = _where(status, task, lane, created_after, created_before)
    page = reads.list_tasks(where, limit, cursor, caller=caller())
    return _json(
        200, {"tasks": [views.listed(r) for r in page.tasks], "next_cursor": page.next_cursor}
    )


def _where(
    status: str | None,
    task: str | None,
    lane: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> TaskFilter:
    """The tasks a listing or a bulk retry is about, from the filters both take."""
    return TaskFilter(Status(status) if status else None, task, lane, created_after, created_before)


@app.get(
    "/tasks/<task_id>",
    summary="A task's status, result or error",
    responses={
        200: {"description": "The task", "content": {"application/json": {"model": TaskDetail}}},
        **_errors(404, 503),
    },
)
def get_task(
    task_id: Annotated[str, Path(description="The task's id")],
    include: Annotated[
        Literal["payload"] | None,
        Query(description="payload: also the task's input (what it was submitted with)"),
    ] = None,
):
    record = reads.get_task(task_id, caller=caller())
    if include == "payload":
        return _json(200, views.with_input(views.detail(record), reads.get_input(record)))
    return _json(200, views.detail(record))


@app.post(
    "/tasks/retry",
    summary="Re-queue failed tasks in bulk",
    description="Failed tasks matching the filters, newest first, at most 1,000 per call, "
    "through the bulk send path. more: some remain; call again.",
    responses={
        202: {"description": "Queued again", "content": {JSON: {"model": RetryResponse}}},
        **_errors(400, 503),
    },
)
def retry_tasks(body: Annotated[RetryRequest, Body()]):
    where = _where(body.status, body.task, body.lane, body.created_after, body.created_before)
    records, more = service.retry_matching(where, body.limit, caller=caller())
    return _json(202, {"retried": [str(r.id) for r in records], "more": more})


@app.get(
    "/stats",
    summary="Counts by status and lane, the oldest queued task, completions, queue depths",
    description="Counting by status reads the whole table: on a very large one, call it "
    "every minute, not every second.",
    responses={
        200: {"description": "The figures", "content": {JSON: {"model": Stats}}},
        **_errors(503),
    },
)
def get_stats():
    return _json(200, reads.stats(caller=caller()))


@app.get(
    "/workers",
    summary="Celery workers alive, what each runs; each lane's running tasks",
    description="Operators only (others get empty lists): each Celery worker's heartbeat "
    "(name, host, pid, queues, concurrency, the tasks it runs, when it was last heard of) and "
    "how many tasks each lane runs now.",
    responses={
        200: {"description": "The workers", "content": {JSON: {"model": WorkersView}}},
        **_errors(503),
    },
)
def get_workers():
    return _json(200, views.workers_view(reads.workers(caller=caller()), 3 * HEARTBEAT_S))


@app.get(
    "/stats/tasks",
    summary="Per task name: counts by status, runtime p50/p95, failure rate",
    description="Over the last `window` seconds (3600 unless given): counts of the tasks "
    "created then, runtimes and failure rate of those that finished then. A caller who is "
    "not an operator sees its own tasks' figures.",
    responses={
        200: {"description": "The figures", "content": {JSON: {"model": TaskStats}}},
        **_errors(400, 503),
    },
)
def get_task_stats(
    window: Annotated[
        int,
        Query(ge=reads.WINDOW_S[0], le=reads.WINDOW_S[1], description="Seconds to look back"),
    ] = 3600,
):
    return _json(200, views.task_figures(reads.by_task(window, caller=caller()), window))


@app.post(
    "/tasks/<task_id>/retry",
    summary="Re-queue a failed task",
    responses={
        202: {
            "description": "Queued again",
            "content": {"application/json": {"model": TaskSummary}},
        },
        **_errors(404, 409, 503),
    },
)
def retry_task(task_id: Annotated[str, Path(description="The task's id")]):
    record = service.retry_task(task_id, caller=caller())
    return _json(202, views.summary(record), {"Location": f"/tasks/{record.id}"})


@app.post(
    "/tasks/<task_id>/cancel",
    summary="Cancel a task",
    description="A task waiting to run (pending, scheduled, queued) is cancelled now; its "
    "message, when it arrives, is acknowledged without running. A running task is asked to "
    "stop: it sees the request (tasklane.current_task().cancel_requested) and ends cancelled "
    "when it stops. A finished task cannot be cancelled (409).",
    responses={
        200: {"description": "The task", "content": {"application/json": {"model": TaskDetail}}},
        **_errors(404, 409, 503),
    },
)
def cancel_task(task_id: Annotated[str, Path(description="The task's id")]):
    return _json(200, views.detail(service.cancel_task(task_id, caller=caller())))


@app.post(
    "/workflows",
    summary="Submit a workflow: a chain, group or chord, nested",
    description="Every task is stored at once, in one transaction; the first steps are sent "
    "and the others wait for their predecessors. A chain step without a payload gets the result "
    "before it; with one, {payload, previous}. A chord's body gets the list of its header's "
    "results, once, after all of them. At most 1,000 tasks.",
    responses={
        202: {
            "description": "Stored; its first tasks queued",
            "content": {JSON: {"model": WorkflowCreated}},
        },
        200: {
            "description": "Replay of an Idempotency-Key: the first request's workflow",
            "content": {JSON: {"model": WorkflowCreated}},
        },
        **_errors(400, 413, 422, 503),
    },
)
def submit_workflow(body: Annotated[WorkflowNode, Body()], idempotency_key: IdempotencyKey = None):
    node = workflows.parse(body.model_dump(exclude_unset=True))
    config = settings()
    workflow_id, records, created = service.submit_workflow(
        node,
        max_tasks=workflows.MAX_TASKS,
        max_bytes=config.max_payload_bytes,
        owner=caller().owner,
        idempotency_key=idempotency_key,
    )
    answer = {
        "id": str(workflow_id),
        "status": workflows.status_of([r.status.value for r in records]),
        "tasks": [views.summary(r) for r in records],
    }
    return _json(202 if created else 200, answer, {"Location": f"/workflows/{workflow_id}"})


@app.get(
    "/workflows/<workflow_id>",
    summary="A workflow's status, its tasks, and its result or the error that failed it",
    responses={
        200: {"description": "The workflow", "content": {JSON: {"model": WorkflowDetail}}},
        **_errors(404, 503),
    },
)
def get_workflow(
    workflow_id: Annotated[str, Path(description="The workflow's id")],
    limit: Annotated[
        int, Query(ge=1, le=workflows.MAX_TASKS, description="Tasks in this page")
    ] = workflows.MAX_TASKS,
    cursor: Annotated[
        str | None, Query(max_length=40, description="The previous page's next_cursor")
    ] = None,
):
    view = reads.get_workflow(
        workflow_id, caller=caller(), max_result_bytes=settings().max_result_bytes
    )
    return _json(200, views.workflow_view(view, views.workflow_offset(cursor), limit))


@app.post(
    "/workflows/<workflow_id>/cancel",
    summary="Cancel what has not run of a workflow",
    description="Its waiting tasks are cancelled now; its running ones are asked to stop.",
    responses={
        200: {"description": "The workflow", "content": {JSON: {"model": WorkflowDetail}}},
        **_errors(404, 503),
    },
)
def cancel_workflow(workflow_id: Annotated[str, Path(description="The workflow's id")]):
    return _json(200, views.workflow_view(service.cancel_workflow(workflow_id, caller=caller())))


@app.get("/openapi.json", include_in_schema=False)
def openapi_document():
    return Response(200, content_types.APPLICATION_JSON, openapi_json())


#: The console's files (tasklane/console), by the name the page asks for.
CONSOLE_FILES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
#: The page runs only its own files and talks only to its own origin (the API).
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@app.get("/console", include_in_schema=False)
def console_page():
    """The console: one static page over this JSON API (docs/operations.md). Its files are read
    on the first request, so the API's cold start does not carry them."""
    headers = CONSOLE_HEADERS | {"Cache-Control": "no-cache"}
    return Response(200, "text/html; charset=utf-8", _console_file("index.html"), headers)


@app.get("/console/<name>", include_in_schema=False)
def console_file(name: str):
    if name not in CONSOLE_FILES:
        return error_response(404, "not_found", f"the console has no file {name!r}")
    headers = CONSOLE_HEADERS | {"Cache-Control": "max-age=300"}
    return Response(200, CONSOLE_FILES[name], _console_file(name), headers)


@functools.cache
def _console_file(name: str) -> str:
    from importlib import resources

    return resources.files("tasklane").joinpath("console", name).read_text("utf-8")


@app.get("/docs", include_in_schema=False)
def swagger_ui():
    """Swagger UI on the same document as ``/openapi.json``. Its code (and Powertools' OpenAPI
    models, ~40 ms to import) loads on the first call, not in every cold start."""
    return Response(200, content_types.TEXT_HTML, _swagger_html())


@functools.cache
def _swagger_html() -> str:
    from importlib import resources

    from aws_lambda_powertools.event_handler.openapi import swagger_ui as ui

    bundled = resources.files(ui)
    return ui.generate_swagger_html(
        # "</" escaped so the document cannot close the page's <script> element
        spec=openapi_json().replace("</", "<\\/"),
        swagger_js=(bundled / "swagger-ui-bundle.min.js").read_text("utf-8"),
        swagger_css=(bundled / "swagger-ui.min.css").read_text("utf-8"),
        swagger_base_url="",
        oauth2_config=None,
    )


def openapi_json() -> str:
    """The API's OpenAPI document (kept in the repository as openapi.json).

    Powertools describes request validation errors as 422 ``HTTPValidationError``; this API
    answers them with 400 and its own error shape (``handle_validation_error``), so the
    document says that instead.
    """
    schema = app.get_openapi_schema(
        title=TITLE, version=VERSION, summary="Durable background tasks, Celery-compatible"
    ).model_dump(by_alias=True, exclude_none=True, mode="json")
    default = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operation in (op for path in schema["paths"].values() for op in path.values()):
        responses = operation["responses"]
        if responses.get("422", {}).get("content", {}).get(JSON, {}).get("schema") == default:
            del responses["422"]
            responses.setdefault("400", _described(400))
    for powertools_only in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schema["components"]["schemas"].pop(powertools_only, None)
    return json.dumps(schema, indent=2, sort_keys=True)


@app.exception_handler(RequestValidationError)
def handle_validation_error(exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        if loc[:1] == ["body"]:  # where the request put it, not a field of the body
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(400, InvalidRequest.code, "; ".join(problems)[:2000])


@app.exception_handler(RequestUnsupportedContentType)
def handle_unsupported_content_type(exc: RequestUnsupportedContentType) -> Response:
    return error_response(415, "unsupported_media_type", f"send {JSON}")


@app.exception_handler(TasklaneError)
def handle_tasklane_error(exc: TasklaneError) -> Response:
    status = next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), 500)
    if status >= 500:
        logger.warning("request failed", extra={"code": exc.code, "error": str(exc)})
    message = str(exc) if status < 500 or status == 503 else "internal error"
    return error_response(status, exc.code, message)


@app.exception_handler(RecursionError)
def handle_too_deep(exc: RecursionError) -> Response:
    """A body nested so deep that the JSON decoder itself gives up (thousands of levels)."""
    return error_response(400, InvalidRequest.code, "the JSON body is nested too deeply")


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error")
    return error_response(500, "internal_error", "internal error")


@app.not_found
def handle_not_found(exc: Exception) -> Response:
    event = app.current_event
    # A known path with another method is 405 with Allow (Powertools keeps its routes here).
    # As in API Gateway, a static path (/tasks/batch) wins over a template (/tasks/{id}).
    static = {r.method for r in app._static_routes if r.rule.match(event.path)}
    allowed = sorted(static or {r.method for r in app._dynamic_routes if r.rule.match(event.path)})
    if allowed:
        response = error_response(
            405, "method_not_allowed", f"{event.http_method} is not allowed on {event.path}"
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return error_response(404, "not_found", f"no route for {event.http_method} {event.path}")


def _raw_error(status: int, code: str, message: str) -> dict:
    body = json.dumps({"error": {"code": code, "message": message}})
    return {
        "statusCode": status,
        "headers": {"Content-Type": JSON},
        "body": body,
        "isBase64Encoded": False,
    }


def _json_only(event: dict) -> dict | None:
    """Refuse a body that is not JSON before routing: 415 for another media type (forms too,
    which Powertools would otherwise parse), 400 for bytes that are not UTF-8 text or for a
    body that is not an object (every route takes one)."""
    body = event.get("body")
    if not body:
        return None
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media = headers.get("content-type", JSON).split(";", 1)[0].strip().lower()
    if media != JSON and not (media.startswith("application/") and media.endswith("+json")):
        return _raw_error(415, "unsupported_media_type", f"send {JSON}, not {media}")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return _raw_error(400, InvalidRequest.code, "the request body is not UTF-8 JSON")
    if not body.lstrip().startswith("{"):  # Powertools would take an array's first element
        return _raw_error(400, InvalidRequest.code, "the request body must be a JSON object")
    return None


def _identify(event: dict) -> Caller | dict | None:
    """The request's caller; or, for a request without the identity the API requires, a 401
    before anything else: no validation, no lookup, so nothing (not even which task names
    exist) is told to it. Only what holds no task data is served without one (None): the
    console's static files and the API's own description (routeKey is the route API Gateway
    matched, not the path the client sent; in AWS the authorizer still guards the
    description)."""
    route = str(event.get("routeKey") or "").partition(" ")[2]
    if route in ("/console", "/openapi.json", "/docs") or route.startswith("/console/"):
        return None
    config = settings()
    authorizer = (event.get("requestContext") or {}).get("authorizer")
    try:
        return callers.from_authorizer(config.api_authorization, authorizer, config.operators)
    except NotAuthenticated as exc:
        return _raw_error(401, exc.code, str(exc))


def handle(event: dict, context: Any) -> dict:
    """Resolve one HTTP API event; the producer function's whole job."""
    who = _identify(event)
    if isinstance(who, dict):
        return who
    if refused := _json_only(event):
        return refused
    if who is not None:
        app.append_context(caller=who)  # cleared when the request is resolved
    return app.resolve(event, context)
