"""Lanes: where a task runs. A lane is a queue and the consumer that reads it.

``lambda``: a Lambda function on an SQS event source (light, short tasks).
``celery``: long-running Celery workers on kombu's SQS transport (heavy tasks).
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlparse

from tasklane.config import Settings
from tasklane.errors import ConfigurationError


class Lane(StrEnum):
    LAMBDA = "lambda"
    CELERY = "celery"


def queue_url(lane: Lane, settings: Settings) -> str:
    url = settings.lambda_queue_url if lane is Lane.LAMBDA else settings.celery_queue_url
    if not url:
        raise ConfigurationError(f"{lane.upper()}_QUEUE_URL is not set")
    return url


def dead_letter_url(lane: Lane, settings: Settings) -> str | None:
    """The lane's DLQ, where poison messages go at once (None: let maxReceiveCount do it)."""
    return settings.lambda_dlq_url if lane is Lane.LAMBDA else settings.celery_dlq_url


def queue_name(url: str) -> str:
    """The queue name of an SQS queue URL; Celery uses it as the routing key."""
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
