"""A claim-checked task's run in a Celery worker: claim its row for the delivery, run it
through the executor, and say what becomes of its message.

Celery's side of a run (the task class's ``__call__``, the request, the heartbeat) calls in
here; nothing here knows Celery's classes, so the task module (:mod:`tasklane.celery`) and the
worker (:mod:`tasklane.worker`) both depend on it and not on each other.
"""

from __future__ import annotations

import time
import uuid

from tasklane import broker, codec, registry
from tasklane.config import settings
from tasklane.errors import AttemptNotDone, TasklaneError
from tasklane.executor import Attempt, Delivery, Executor, Outcome, Verdict, delivery_token
from tasklane.lanes import Lane, queue_name
from tasklane.logs import logger, task_fields
from tasklane.store import default_store

#: How long a claim, or a finished task's outcome, may wait for an unreachable Postgres.
OUTCOME_PATIENCE_S = 120


def lease_seconds(queue_url: str | None) -> int:
    """A claim lasts as long as its message stays hidden; the heartbeat extends both together.

    So a worker killed mid-task frees its task about when SQS delivers the message again.
    """
    try:
        return broker.queue_visibility(queue_url) if queue_url else settings().lease_seconds
    except Exception:
        return settings().lease_seconds


def execute(
    spec: registry.Task,
    task_id: str,
    token: str | None,
    eta: str | None = None,
    expires: str | None = None,
) -> str:
    """Run one delivery in this worker; raises :class:`AttemptNotDone` to leave it unacked.
    ``eta`` and ``expires``: the message's headers, as Celery sent them."""
    config = settings()
    try:
        delivery = Delivery(
            spec.name,
            uuid.UUID(str(task_id)),
            token or delivery_token(None),
            eta=codec.instant(eta, "eta"),
            expires=codec.instant(expires, "expires"),
        )
    except (ValueError, TasklaneError) as exc:
        step: Attempt | Verdict = Verdict(Outcome.POISON, f"not a claim-check message: {exc}")
    else:
        executor = Executor(default_store())
        lease = lease_seconds(config.celery_queue_url)
        step = executor.claim(delivery, lease, time.monotonic() + OUTCOME_PATIENCE_S)
        if isinstance(step, Attempt):
            # The heartbeat keeps the claim while the outcome waits for Postgres.
            step, _ = executor.run(step, patience_s=OUTCOME_PATIENCE_S, limit_s=spec.time_limit)
    if step.outcome.acknowledge:
        return step.outcome.value
    if step.outcome is Outcome.POISON:
        logger.error("poison message", extra=task_fields(task_id, spec.name, reason=step.reason))
        url = config.celery_queue_url
        body = broker.message_body(spec.name, task_id, queue_name(url) if url else "celery")
        if broker.dead_letter(body, Lane.CELERY, step.reason, config):
            return step.outcome.value
    raise AttemptNotDone(f"{step.outcome}: {step.reason}")


def claim_adopted(name: str, row: uuid.UUID, token: str) -> Attempt | Verdict:
    """Claim an adopted task's row for one delivery: the attempt (Celery runs it now), or why
    not (:class:`Verdict`)."""
    config = settings()
    return Executor(default_store()).claim(
        Delivery(name, row, token),
        lease_seconds(config.celery_queue_url),
        time.monotonic() + OUTCOME_PATIENCE_S,
    )
