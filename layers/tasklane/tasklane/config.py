"""Configuration: read from the environment once per process, frozen, validated.

Every setting tasklane reads is here, so the template tests can check that each one is set in
``template.yaml``. AWS endpoints are deliberately absent: boto3 reads ``AWS_ENDPOINT_URL_SQS`` /
``AWS_ENDPOINT_URL`` itself, which is how the local stack and the tests point at moto.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from tasklane.errors import ConfigurationError

DEFAULT_TASK_MODULES = ("tasklane.examples",)
DEFAULT_MAX_PAYLOAD_BYTES = 5 * 1024 * 1024
#: A result travels whole in a GET /tasks/{id} response, whose limit (Lambda's) is 6 MB.
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
DEFAULT_LEASE_SECONDS = 900
DEFAULT_PENDING_GRACE_SECONDS = 60
DEFAULT_QUEUED_GRACE_SECONDS = 900
DEFAULT_RETENTION_DAYS = 30
DEFAULT_PAYLOAD_RETENTION_DAYS = 7

#: Environment variables the code reads (kept in one place for the template tests).
ENV_VARS = (
    "DATABASE_URL",
    "DATABASE_SECRET_ARN",
    "DATABASE_HOST",
    "DATABASE_NAME",
    "DATABASE_PREPARED_STATEMENTS",
    "LAMBDA_QUEUE_URL",
    "CELERY_QUEUE_URL",
    "LAMBDA_HIGH_QUEUE_URL",
    "CELERY_HIGH_QUEUE_URL",
    "LAMBDA_DLQ_URL",
    "CELERY_DLQ_URL",
    "TASK_MODULES",
    "MAX_PAYLOAD_BYTES",
    "MAX_RESULT_BYTES",
    "LEASE_SECONDS",
    "PENDING_GRACE_SECONDS",
    "QUEUED_GRACE_SECONDS",
    "RETENTION_DAYS",
    "PAYLOAD_RETENTION_DAYS",
    "API_AUTHORIZATION",
    "OPERATORS",
)
#: How the HTTP API authenticates callers (tasklane.callers); NONE only in the local stack.
API_AUTHORIZATIONS = ("AWS_IAM", "JWT", "NONE")


@dataclass(frozen=True, slots=True)
class Settings:
    """The process's configuration; build it with :func:`settings` (cached) or :meth:`from_env`."""

    database_url: str | None = None
    database_secret_arn: str | None = None
    #: Override the secret's host and database (RDS Proxy endpoint; managed master secrets hold
    #: only the user name and password).
    database_host: str | None = None
    database_name: str | None = None
    #: Prepare each statement once per connection (tasklane.database.execute_prepared). Off
    #: behind RDS Proxy for functions whose connections mostly sit idle: a prepared statement
    #: pins the client's connection to one of the database's.
    database_prepared_statements: bool = True
    lambda_queue_url: str | None = None
    celery_queue_url: str | None = None
    #: Each lane's queue for high-priority tasks (:mod:`tasklane.lanes`); unset: one queue.
    lambda_high_queue_url: str | None = None
    celery_high_queue_url: str | None = None
    lambda_dlq_url: str | None = None
    celery_dlq_url: str | None = None
    task_modules: tuple[str, ...] = DEFAULT_TASK_MODULES
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    #: The largest result a task may record (its JSON, in bytes): a larger one fails the task
    #: (``ResultTooLarge``), so every read of it fits in a response.
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    #: How long a claim holds a task before another delivery may take it over (crashed consumer).
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    #: How long a task may stay ``pending`` before the reconciler sends it again.
    pending_grace_seconds: int = DEFAULT_PENDING_GRACE_SECONDS
    #: How long a ``queued`` task may go without a delivery, in a lane with no message
    #: waiting, before the reconciler sends it again (its message was lost). Longer than the
    #: longest retry back-off (300 s).
    queued_grace_seconds: int = DEFAULT_QUEUED_GRACE_SECONDS
    #: Finished tasks older than this many days are deleted by the scheduled prune.
    retention_days: int = DEFAULT_RETENTION_DAYS
    #: Succeeded tasks' payloads older than this many days are dropped (results kept).
    payload_retention_days: int = DEFAULT_PAYLOAD_RETENTION_DAYS
    #: How the HTTP API's callers are authenticated: each sees only its own tasks.
    api_authorization: str = "AWS_IAM"
    #: Callers who see every task: IAM ARNs (users, roles), or JWT groups or scopes.
    operators: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def text(name: str) -> str | None:
            value = environ.get(name, "").strip()
            return value or None

        def number(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
            if value <= 0:
                raise ConfigurationError(f"{name} must be positive, got {value}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = (text(name) or "").lower()
            if not raw:
                return default
            if raw not in ("true", "false"):
                raise ConfigurationError(f"{name} must be true or false, got {raw!r}")
            return raw == "true"

        modules = text("TASK_MODULES")
        authorization = (text("API_AUTHORIZATION") or "AWS_IAM").upper()
        if authorization not in API_AUTHORIZATIONS:
            raise ConfigurationError(
                f"API_AUTHORIZATION must be one of {', '.join(API_AUTHORIZATIONS)}, "
                f"got {authorization!r}"
            )
        return cls(
            database_url=text("DATABASE_URL"),
            database_secret_arn=text("DATABASE_SECRET_ARN"),
            database_host=text("DATABASE_HOST"),
            database_name=text("DATABASE_NAME"),
            database_prepared_statements=flag("DATABASE_PREPARED_STATEMENTS", True),
            lambda_queue_url=text("LAMBDA_QUEUE_URL"),
            celery_queue_url=text("CELERY_QUEUE_URL"),
            lambda_high_queue_url=text("LAMBDA_HIGH_QUEUE_URL"),
            celery_high_queue_url=text("CELERY_HIGH_QUEUE_URL"),
            lambda_dlq_url=text("LAMBDA_DLQ_URL"),
            celery_dlq_url=text("CELERY_DLQ_URL"),
            task_modules=(
                tuple(m.strip() for m in modules.split(",") if m.strip())
                if modules
                else DEFAULT_TASK_MODULES
            ),
            max_payload_bytes=number("MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES),
            max_result_bytes=number("MAX_RESULT_BYTES", DEFAULT_MAX_RESULT_BYTES),
            lease_seconds=number("LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
            pending_grace_seconds=number("PENDING_GRACE_SECONDS", DEFAULT_PENDING_GRACE_SECONDS),
            queued_grace_seconds=number("QUEUED_GRACE_SECONDS", DEFAULT_QUEUED_GRACE_SECONDS),
            retention_days=number("RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
            payload_retention_days=number("PAYLOAD_RETENTION_DAYS", DEFAULT_PAYLOAD_RETENTION_DAYS),
            api_authorization=authorization,
            operators=tuple(o.strip() for o in (text("OPERATORS") or "").split(",") if o.strip()),
        )


@functools.cache
def settings() -> Settings:
    """The settings of this process, read on first use (Lambda containers and workers reuse it)."""
    return Settings.from_env()
