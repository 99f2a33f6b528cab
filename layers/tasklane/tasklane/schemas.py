"""The HTTP API's bodies as pydantic models: validated by Powertools, described in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

TaskStatus = Literal[
    "pending", "scheduled", "queued", "running", "succeeded", "failed", "cancelled"
]
LaneName = Literal["lambda", "celery"]


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
    run_at: AwareDatetime | None = Field(
        None, description="Run no earlier than this moment (RFC 3339, with an offset)"
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


class TaskDetail(TaskSummary):
    attempts: int = Field(ge=0, description="Deliveries that claimed the task")
    result: Any = Field(description="The task's JSON result, once succeeded")
    error: TaskError | None
    created_at: datetime
    updated_at: datetime
    run_at: datetime | None = Field(
        description="When the task is due, if it was asked to run later"
    )


class ErrorBody(BaseModel):
    code: str = Field(examples=["invalid_request"])
    message: str


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message"}}``."""

    error: ErrorBody
