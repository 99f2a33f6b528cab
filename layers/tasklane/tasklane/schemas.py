"""The HTTP API's bodies as pydantic models: validated by Powertools, described in OpenAPI."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    model_validator,
)

from tasklane.moments import in_range

TaskStatus = Literal[
    "waiting", "pending", "scheduled", "queued", "running", "succeeded", "failed", "cancelled"
]
WorkflowStatus = Literal["running", "succeeded", "failed", "cancelled"]
LaneName = Literal["lambda", "celery"]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_text(value: Any) -> Any:
    """A moment arrives as RFC 3339 text: a number (or "0.5") is not read as a Unix time."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 date-time with an offset")
    return value


def _in_range(value: datetime) -> datetime:
    return in_range(value, "the moment")


#: An RFC 3339 date-time with an offset (pydantic alone would take 0.5 for 1970), within the
#: range tasklane stores (:mod:`tasklane.moments`).
Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_in_range)]


#: A JSON number only (not "10", not true), as the Python API takes it.
StrictNumber = StrictInt | StrictFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(_Strict):
    """A task to run: a registered task name and any JSON payload (stored, never queued); now,
    after ``delay_seconds``, or at ``run_at`` (not both)."""

    task: str = Field(min_length=1, max_length=200, examples=["text.wordcount"])
    payload: Any = Field(description="Any JSON value", examples=[{"text": "hello world"}])
    delay_seconds: float | None = Field(
        None,
        ge=0,
        lt=10 * 365 * 86400,
        description="Run no earlier than this many seconds from now",
    )
    run_at: Moment | None = Field(
        None, description="Run no earlier than this moment (RFC 3339, with an offset)"
    )
    unique_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="While a task of this name with this key is live (pending, scheduled, "
        "queued, running), or was created within unique_for seconds, that task is answered "
        "(200) and none is created. Overrides the task's own unique_key",
        examples=["account-42"],
    )
    ordering_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Tasks of one ordering key run one at a time, in submission order. "
        "Overrides the key the task makes of its payload; only for a task declared with one",
    )
    unique_for: StrictNumber | None = Field(
        None,
        ge=0,
        le=366 * 86400,
        description="Seconds after a task's creation during which its key stays taken, "
        "whatever its status",
    )
    priority: StrictInt | None = Field(
        None,
        ge=0,
        le=9,
        description="0 to 9, the higher the sooner (default: the task's own, else 0). From 5 "
        "on, the task goes by its lane's high-priority queue, taken ahead of the lane's backlog",
    )

    @model_validator(mode="after")
    def one_timing(self) -> SubmitRequest:
        if self.delay_seconds is not None and self.run_at is not None:
            raise ValueError("give delay_seconds or run_at, not both")
        return self


class BatchRequest(_Strict):
    tasks: list[SubmitRequest] = Field(min_length=1, max_length=100)


class TaskSummary(BaseModel):
    id: str = Field(description="The task's id (a UUID); also the Celery task id")
    task: str
    lane: LaneName
    status: TaskStatus


class BatchResponse(BaseModel):
    tasks: list[TaskSummary]


class TaskError(BaseModel):
    type: str | None
    message: str | None
    traceback: str | None = Field(None, description="Where it was raised (Python's traceback)")


class WorkflowTask(_Strict):
    """One task of a workflow. Without a payload, it takes the result before it (a later step
    only); with one, it gets ``{"payload": ..., "previous": ...}``."""

    task: str = Field(min_length=1, max_length=200, examples=["images.resize"])
    payload: Any = Field(None, description="Any JSON value; optional after a first step")


class WorkflowChain(_Strict):
    """Steps one after another, each getting the result of the one before."""

    chain: list[WorkflowNode] = Field(min_length=1)


class WorkflowGroup(_Strict):
    """Members side by side; the group's result is their results in member order."""

    group: list[WorkflowNode] = Field(min_length=1)


class ChordParts(_Strict):
    header: list[WorkflowNode] = Field(min_length=1)
    body: WorkflowNode


class WorkflowChord(_Strict):
    """A group, then a body that gets the list of its results: once, after all of them."""

    chord: ChordParts


def _kind(value: Any) -> str | None:
    """Which shape a description is, by its key: errors then speak of that shape only."""
    if isinstance(value, dict):
        keys = value.keys()
    elif isinstance(value, BaseModel):
        keys = value.model_fields_set
    else:
        return None  # not an object: the custom error below
    return next((k for k in ("task", "chain", "group", "chord") if k in keys), None)


WorkflowNode = Annotated[
    Union[  # noqa: UP007
        Annotated[WorkflowTask, Tag("task")],
        Annotated[WorkflowChain, Tag("chain")],
        Annotated[WorkflowGroup, Tag("group")],
        Annotated[WorkflowChord, Tag("chord")],
    ],
    Discriminator(
        _kind,
        custom_error_type="invalid_workflow",
        custom_error_message="expected a task, chain, group or chord",
    ),
]
for _model in (WorkflowChain, WorkflowGroup, ChordParts, WorkflowChord):
    _model.model_rebuild()


class WorkflowCreated(BaseModel):
    id: str = Field(description="The workflow's id (a UUID)")
    status: WorkflowStatus
    tasks: list[TaskSummary] = Field(description="Its tasks, in the order of the description")


class WorkflowError(BaseModel):
    task_id: str = Field(description="The task that failed the workflow")
    task: str
    type: str | None
    message: str | None


class WorkflowStep(TaskSummary):
    after: list[str] = Field(
        default_factory=list, description="The ids of the steps it waits for: the graph's edges"
    )


class WorkflowDetail(WorkflowCreated):
    tasks: list[WorkflowStep] = Field(
        description="Its tasks, in the order of the description, each with its predecessors"
    )
    next_cursor: str | None = Field(
        None, description="The next page of its tasks (limit, cursor); null: no more"
    )
    result: Any = Field(
        description="Once succeeded: a chain's last result, a group's list, a chord's body's"
    )
    result_omitted: str | None = Field(
        None, description="Why the result is left out (its parts are over MAX_RESULT_BYTES)"
    )
    error: WorkflowError | None
    created_at: datetime


class ListedTask(TaskSummary):
    """A task in a listing: everything of :class:`TaskDetail` but its result, and its error
    without the traceback (a page of 500 fits in a response whatever the tasks hold)."""

    attempts: int = Field(ge=0, description="Deliveries that claimed the task")
    error: TaskError | None
    created_at: datetime
    updated_at: datetime
    run_at: datetime | None = Field(
        description="When the task is due, if it was asked to run later"
    )
    workflow_id: str | None = Field(None, description="The workflow it is a step of, if any")
    started_at: datetime | None = Field(None, description="When its first attempt started")
    finished_at: datetime | None = Field(None, description="When it reached a final status")
    payload_bytes: int | None = Field(
        None, description="The payload's size as stored (compressed); null once pruned"
    )
    retry_at: datetime | None = Field(
        None,
        description="A queued task waiting to be retried after a failed attempt: when its "
        "message is delivered again (null otherwise)",
    )
    unique_key: str | None = Field(
        None, description="Its unique key: a duplicate submitted while it is live gets it back"
    )
    waiting_on: str | None = Field(
        None,
        description="Why a pending or queued task that could be delivered waits: the limit it "
        "is over, as 'concurrency 5/5 for account=42'",
    )
    priority: int = Field(0, description="0 to 9, the higher the sooner")


class Attempt(BaseModel):
    """One attempt of a task, as its history keeps it."""

    attempt: int = Field(description="Its number (counted afresh after a manual retry)")
    started_at: datetime | None
    finished_at: datetime | None = Field(
        description="When it ended (for a lost one: when another delivery took the task over)"
    )
    outcome: Literal["succeeded", "failed", "cancelled", "lost"]
    error: TaskError | None = Field(None, description="A failed attempt's error (no traceback)")
    ran_on: str | None = Field(
        None, description="Where it ran: a Lambda log stream, or a worker's host:pid"
    )


class TaskDetail(ListedTask):
    result: Any = Field(description="The task's JSON result, once succeeded")
    history: list[Attempt] = Field(
        default_factory=list,
        description="Its attempts, oldest first (the last 50), kept across a manual retry",
    )
    payload: Any = Field(
        None,
        description="With include=payload: the task's input as JSON; when it is longer than "
        "65,536 characters of JSON text, the first 65,536 of them, as a string "
        "(payload_truncated)",
    )
    payload_truncated: bool | None = Field(
        None, description="With include=payload: payload is the start of the JSON text"
    )
    payload_chars: int | None = Field(
        None, description="With include=payload: the input's length in characters of JSON"
    )
    payload_pruned: bool | None = Field(
        None, description="With include=payload: the input is gone (pruned after retention)"
    )


class TaskPage(BaseModel):
    """One page of tasks, newest first; ``next_cursor`` fetches the next (null: no more).
    Summaries: each task's result and traceback are in ``GET /tasks/{id}``."""

    tasks: list[ListedTask]
    next_cursor: str | None


class RetryRequest(_Strict):
    """Which failed tasks to retry (every part optional; status, if given, must be failed)."""

    status: Literal["failed"] | None = None
    task: str | None = Field(None, min_length=1, max_length=200)
    lane: LaneName | None = None
    created_after: Moment | None = None
    created_before: Moment | None = None
    limit: int = Field(1000, ge=1, le=1000, description="At most this many, newest first")


class RetryResponse(BaseModel):
    retried: list[str] = Field(description="The tasks queued again")
    more: bool = Field(description="Failed tasks matching remain: call again")


class MinuteFigures(BaseModel):
    minute: datetime
    succeeded: int
    failed: int
    cancelled: int


class WorkerRow(BaseModel):
    name: str = Field(description="Celery's name for it: celery@host")
    host: str
    pid: int
    queues: list[str]
    concurrency: int | None
    active: list[str] = Field(description="The ids of the tasks it was running at its last beat")
    started_at: datetime
    last_seen: datetime
    seen_seconds_ago: float
    alive: bool = Field(description="Heard of within three heartbeats (30 s)")


class WorkersView(BaseModel):
    """Celery workers that beat within the last 10 minutes, and each lane's running tasks."""

    workers: list[WorkerRow]
    running: dict[str, int] = Field(
        description="lane → its tasks running now (the lambda lane's concurrency)"
    )


class TaskNameFigures(BaseModel):
    task: str
    counts: dict[str, int] = Field(description="status → its tasks created in the window")
    finished: int = Field(description="Its tasks that succeeded or failed in the window")
    runtime_p50_ms: float | None = Field(description="Their last attempt's runtime, median")
    runtime_p95_ms: float | None = Field(description="Their last attempt's runtime, p95")
    failure_rate: float | None = Field(description="The share of them that failed, 0 to 1")


class TaskStats(BaseModel):
    """Per task name over a window (the busiest first)."""

    window_seconds: int
    tasks: list[TaskNameFigures]


class Stats(BaseModel):
    counts: dict[str, dict[str, int]] = Field(description="status → lane → tasks")
    oldest_queued_seconds: dict[str, float] = Field(
        description="lane → age of its oldest queued task"
    )
    finished_per_minute: list[MinuteFigures] = Field(description="The last 15 minutes")
    queue_depths: dict[str, int | None] = Field(
        description="Messages waiting in each lane's queue, its high-priority queue and its "
        "DLQ (null: SQS did not answer, or the lane has no such queue)"
    )


class ErrorBody(BaseModel):
    code: str = Field(examples=["invalid_request"])
    message: str


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message"}}``."""

    error: ErrorBody
