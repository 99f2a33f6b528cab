"""Lanes: where a task runs. A lane is a queue and the consumer that reads it.

``lambda``: a Lambda function on an SQS event source (light, short tasks).
``celery``: long-running Celery workers on kombu's SQS transport (heavy tasks).

Priorities: a task's ``priority`` is 0 (the default) to 9, Celery's range, the higher the
sooner. SQS has no priorities within a queue, so each lane has a second queue for high
priority (5 and up): in AWS it has an event source of its own with its own maximum
concurrency, so a high-priority task is taken at once however long the lane's backlog is;
Celery workers consume both queues. Within a queue, tasks go in SQS's order (roughly first
in, first out), whatever their priority.
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlparse

from tasklane.config import Settings
from tasklane.errors import ConfigurationError


class Lane(StrEnum):
    LAMBDA = "lambda"
    CELERY = "celery"


#: The priorities a task may have: 0 (the default) to 9, the higher the sooner.
PRIORITIES = range(10)
#: From this priority on, a task goes by its lane's high-priority queue.
HIGH_PRIORITY = 5


def checked_priority(value: object, what: str = "priority") -> int:
    """A priority as given (HTTP, Python, the CLI), or a clear error: a whole number from 0 to 9."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITIES:
        raise ValueError(f"{what} must be a whole number from 0 to 9, got {value!r}")
    return value


def priority_of(value: object) -> int:
    """A priority from outside tasklane's own checks (a Celery message's or task's, any value):
    itself if it is one of :data:`PRIORITIES`, else 0 (RabbitMQ's 0-255, a float)."""
    try:
        return checked_priority(value)
    except ValueError:
        return 0


def queue_url(lane: Lane, settings: Settings, priority: int = 0) -> str:
    """The queue a task of this lane and priority is sent to: the lane's high-priority queue
    from :data:`HIGH_PRIORITY` on, if the lane has one; else the lane's queue."""
    if priority >= HIGH_PRIORITY:
        high = high_queue_url(lane, settings)
        if high:
            return high
    url = own_queue_url(lane, settings)
    if not url:
        raise ConfigurationError(f"{lane.upper()}_QUEUE_URL is not set")
    return url


def own_queue_url(lane: Lane, settings: Settings) -> str | None:
    """The lane's own queue (``LAMBDA_QUEUE_URL``, ``CELERY_QUEUE_URL``), if configured."""
    return settings.lambda_queue_url if lane is Lane.LAMBDA else settings.celery_queue_url


def high_queue_url(lane: Lane, settings: Settings) -> str | None:
    return settings.lambda_high_queue_url if lane is Lane.LAMBDA else settings.celery_high_queue_url


def queue_urls(lane: Lane, settings: Settings) -> list[str]:
    """Every configured queue of a lane, the high-priority one first (a worker consumes them
    in turn)."""
    return [u for u in (high_queue_url(lane, settings), own_queue_url(lane, settings)) if u]


def dead_letter_url(lane: Lane, settings: Settings) -> str | None:
    """The lane's DLQ, where poison messages go at once (None: let maxReceiveCount do it)."""
    return settings.lambda_dlq_url if lane is Lane.LAMBDA else settings.celery_dlq_url


def queue_name(url: str) -> str:
    """The queue name of an SQS queue URL; Celery uses it as the routing key."""
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
