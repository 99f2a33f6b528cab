"""The Celery lane: ``celery -A tasklane.worker worker -Q <celery lane queue name>``.

A stock Celery app on kombu's SQS transport. Every registered tasklane task is also a Celery task
of the same name taking one argument, the task id, so stock Celery producers (``send_task``) and
tasklane's producer reach the same code. Settings follow what is known to work on SQS:

- acks late, never on failure: a failed attempt's message returns after its visibility timeout
  (kombu's back-off policy shortens that wait per receive count) and reaches the DLQ after
  ``maxReceiveCount``; a killed worker's message is redelivered (``reject_on_worker_lost``);
- prefetch 1, JSON only, predefined queues (no ListQueues/CreateQueue), no remote control or
  event queues (they would create pidbox/reply queues on SQS).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from celery import Celery, signals
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from tasklane import broker, database, registry
from tasklane.celery_settings import SQS_POLLING, SQS_WORKER_SETTINGS
from tasklane.config import settings
from tasklane.errors import TasklaneError
from tasklane.executor import Attempt, Executor, Outcome, Pointer, Verdict
from tasklane.lanes import Lane, queue_name
from tasklane.lifecycle import retry_delay_seconds
from tasklane.logs import logger, task_fields

BACKOFF_STEPS = 20
#: How long a claim, or a finished task's outcome, may wait for an unreachable Postgres.
OUTCOME_PATIENCE_S = 120
#: Beats per visibility timeout: the message is extended well before it would reappear.
BEATS_PER_TIMEOUT = 3


class AttemptNotDone(TasklaneError):
    """The attempt failed or could not run now; the message is left for SQS to redeliver."""

    code = "attempt_not_done"


def _region() -> str:
    import boto3

    return boto3.session.Session().region_name or "us-east-1"


def _queues() -> dict[str, dict]:
    """Predefined queues: the lambda lane's too, so a worker can drain it if told ``-Q``."""
    config = settings()
    names = [spec.name for spec in registry.all_tasks()]
    backoff = {n: retry_delay_seconds(n) for n in range(1, BACKOFF_STEPS + 1)}
    queues = {}
    for url in filter(None, (config.celery_queue_url, config.lambda_queue_url)):
        queues[queue_name(url)] = {"url": url, "backoff_policy": backoff, "backoff_tasks": names}
    return queues


class Heartbeat:
    """While a task runs, keep its message invisible and its claim's lease alive.

    A task longer than the queue's visibility timeout would otherwise be delivered again while it
    still runs (celery#5935). Runs in the worker's main process, which holds the message.
    """

    def __init__(self, queue_url: str, receipt_handle: str, task_id: str, seconds: int) -> None:
        self.args = (queue_url, receipt_handle, task_id, seconds)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{task_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from tasklane.service import default_store

        queue_url, receipt_handle, task_id, seconds = self.args
        while not self.stop.wait(max(1.0, seconds / BEATS_PER_TIMEOUT)):
            try:
                broker.change_visibility(queue_url, receipt_handle, seconds)
                default_store().extend_lease(uuid.UUID(task_id), seconds)
            except Exception as exc:  # a missed beat is retried; the next may still be in time
                logger.warning("heartbeat failed", extra=task_fields(task_id, error=str(exc)))

    def cancel(self) -> None:
        self.stop.set()


class HeartbeatRequest(Request):
    """Celery's request, plus a heartbeat from the moment the pool accepts the task until it is
    acknowledged or rejected (after which kombu's back-off sets the message's visibility)."""

    _heartbeat: Heartbeat | None = None

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        super().on_accepted(pid, time_accepted)
        info = self._message.delivery_info if self._message else {}
        sqs_message, queue_url = info.get("sqs_message"), info.get("sqs_queue")
        if sqs_message and queue_url:
            seconds = _lease_seconds(queue_url)
            self._heartbeat = Heartbeat(queue_url, sqs_message["ReceiptHandle"], self.id, seconds)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def acknowledge(self) -> None:
        self._stop_heartbeat()
        super().acknowledge()

    def reject(self, requeue: bool = False) -> None:
        self._stop_heartbeat()
        super().reject(requeue)


def create_app() -> Celery:
    config = settings()
    queues = _queues()
    default_queue = queue_name(config.celery_queue_url) if config.celery_queue_url else "celery"
    app = Celery("tasklane", set_as_current=True)
    app.conf.update(
        broker_url="sqs://",
        broker_transport_options={
            "region": _region(),
            "predefined_queues": queues,
            **SQS_POLLING,
        },
        task_default_queue=default_queue,
        task_create_missing_queues=False,
        worker_consumer="tasklane.worker:DeadLetteringConsumer",
        **SQS_WORKER_SETTINGS,
    )
    for spec in registry.all_tasks():
        _register(app, spec)
    return app


def _register(app: Celery, spec: registry.TaskSpec) -> None:
    def run(task_id: str) -> str:
        return execute(spec, task_id)

    run.__name__ = run.__qualname__ = spec.name.replace(".", "_")
    run.__doc__ = spec.fn.__doc__
    app.task(name=spec.name, typing=False, Request=HeartbeatRequest)(run)


def _lease_seconds(queue_url: str | None) -> int:
    """A claim lasts as long as its message stays hidden; the heartbeat extends both together.

    So a worker killed mid-task frees its task about when SQS delivers the message again.
    """
    try:
        return broker.queue_visibility(queue_url) if queue_url else settings().lease_seconds
    except Exception:
        return settings().lease_seconds


def execute(spec: registry.TaskSpec, task_id: str) -> str:
    """Run one delivery in this worker; raises :class:`AttemptNotDone` to leave it unacked."""
    from tasklane.service import default_store

    config = settings()
    try:
        pointer = Pointer(spec.name, uuid.UUID(str(task_id)))
    except ValueError:
        step: Attempt | Verdict = Verdict(Outcome.POISON, f"{task_id!r} is not a task id")
    else:
        executor = Executor(default_store())
        lease = _lease_seconds(config.celery_queue_url)
        (step,) = executor.claim([pointer], lease, time.monotonic() + OUTCOME_PATIENCE_S)
        if isinstance(step, Attempt):
            # The heartbeat keeps the claim while the outcome waits for Postgres.
            step = executor.run(step, time.monotonic() + OUTCOME_PATIENCE_S)
    if step.outcome.acknowledge:
        return step.outcome.value
    if step.outcome is Outcome.POISON:
        logger.error("poison message", extra=task_fields(task_id, spec.name, reason=step.reason))
        url = config.celery_queue_url
        body = broker.message_body(spec.name, task_id, queue_name(url) if url else "celery")
        if broker.dead_letter(body, Lane.CELERY, step.reason, config):
            return step.outcome.value
    raise AttemptNotDone(f"{step.outcome}: {step.reason}")


def _dead_letter_delivery(message: Any, reason: str) -> bool:
    """Move a received message, as SQS delivered it, to the celery lane's DLQ with a reason."""
    info = getattr(message, "delivery_info", None) or {}
    sqs_message = info.get("sqs_message")
    if not sqs_message:
        return False
    logger.error("poison message", extra={"reason": reason})
    return broker.dead_letter(sqs_message["Body"], Lane.CELERY, reason, settings())


def _move_to_dead_letters(message: Any, reason: str) -> None:
    """Dead-letter a message Celery rejected, and delete it from its queue.

    kombu leaves a rejected message on a queue with a redrive policy, so it would come back
    until maxReceiveCount (kombu#368); poison should reach the DLQ after one delivery.
    """
    if _dead_letter_delivery(message, reason):
        info = message.delivery_info
        broker.sqs().delete_message(
            QueueUrl=info["sqs_queue"], ReceiptHandle=info["sqs_message"]["ReceiptHandle"]
        )


@signals.task_unknown.connect
def _dead_letter_unknown_task(message: Any = None, name: str = "", **_: object) -> None:
    """A message for a task this worker does not know (Celery has rejected it)."""
    _move_to_dead_letters(message, f"no task named {name!r} is registered in this worker")


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but poison goes to the DLQ after one delivery instead of looping
    (rejected) or vanishing (acknowledged): a message of another content type (pickle, yaml),
    an invalid task message, or one that does not decode."""

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)  # logs and rejects
        _move_to_dead_letters(message, f"invalid task message: {exc}"[:1000])

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _dead_letter_delivery(message, f"undecodable message: {exc}"[:1000])
        super().on_decode_error(message, exc)  # logs and acknowledges


@signals.worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Each pool process opens its own connections (sockets do not survive a fork)."""
    database.reset()
    broker.sqs.cache_clear()


app = create_app()
