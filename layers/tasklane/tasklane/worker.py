"""The Celery lane: ``celery -A tasklane.worker worker -Q <celery lane queue name>``.

A stock Celery app on kombu's SQS transport. Every registered tasklane task is also a Celery task
of the same name taking one argument, the task id, so stock Celery producers (``send_task``) and
tasklane's producer reach the same code. Settings follow what is known to work on SQS:

- acks late, never on failure: a failed attempt's message returns after its visibility timeout
  (kombu's back-off policy shortens that wait per receive count) and reaches the DLQ after
  ``maxReceiveCount``; a killed worker's or pool process's message is redelivered
  (:class:`ClaimCheckRequest` says how, as Celery's requeue cannot work on SQS);
- prefetch 1, JSON only, predefined queues (no ListQueues/CreateQueue), no remote control or
  event queues (they would create pidbox/reply queues on SQS).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, signals, states
from celery.exceptions import Reject
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from kombu.utils import json as kombu_json

from tasklane import broker, codec, database, payloads, registry
from tasklane.celery import (
    ADOPTED,
    CLAIM_KEY,
    DELIVERY_KEY,
    ROW_KEY,
    AdoptedTask,
    ClaimCheckTask,
    configure,
    restored_message,
)
from tasklane.celery_run import (
    OUTCOME_PATIENCE_S,
    claim_adopted,
    lease_seconds,
)
from tasklane.config import settings
from tasklane.errors import StoreUnavailable, TasklaneError, TimeLimitExceeded, UnknownTask
from tasklane.executor import (
    UNKNOWN_HERE_BACKOFF_S,
    Attempt,
    Delivery,
    Executor,
    Outcome,
    Verdict,
    delivery_token,
)
from tasklane.lanes import Lane
from tasklane.logs import logger, task_fields
from tasklane.store import default_store

#: Beats per visibility timeout: the message is extended well before it would reappear.
BEATS_PER_TIMEOUT = 3
#: The heartbeat beats until the hard limit plus this: the time to record the outcome, which
#: may wait out a database outage for OUTCOME_PATIENCE_S after the run ends. Stopping sooner
#: let the message reappear, and the task run again, while its outcome was still retrying.
BEATS_GRACE_S = 60 + OUTCOME_PATIENCE_S


class Heartbeat:
    """While a run lasts, keep its message invisible and its claim's lease alive.

    A task longer than the queue's visibility timeout would otherwise be delivered again while it
    still runs (celery#5935). Runs in the worker's main process, which holds the message. It
    beats only while ``alive()`` says the run is still Celery's active request, and never past
    ``until`` (its hard time limit): however the run ends (acknowledged, rejected, cancelled on
    a lost connection, its process killed), the lease and the message are let go with it.
    The message and the lease are extended separately: a refused visibility change (SQS's
    12-hour cap) does not stop the lease of a run that is still alive.
    """

    def __init__(
        self,
        queue_url: str,
        receipt_handle: str,
        task_id: uuid.UUID,
        token: str,
        seconds: int,
        alive: Callable[[], bool],
        until: float,
    ) -> None:
        self.args = (queue_url, receipt_handle, task_id, token, seconds)
        self.alive, self.until = alive, until
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{task_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        queue_url, receipt_handle, task_id, token, seconds = self.args
        while not self.stop.wait(max(1.0, seconds / BEATS_PER_TIMEOUT)):
            if not self.alive() or time.monotonic() > self.until:
                return
            try:
                broker.change_visibility(queue_url, receipt_handle, seconds)
            except Exception as exc:  # a missed beat is retried; the next may still be in time
                logger.warning("heartbeat: visibility", extra=task_fields(task_id, error=str(exc)))
            try:
                default_store().extend_lease(task_id, token, seconds)
            except Exception as exc:
                logger.warning("heartbeat: lease", extra=task_fields(task_id, error=str(exc)))

    def cancel(self) -> None:
        self.stop.set()


class ClaimCheckRequest(Request):
    """Celery's request for a claim-check message, with what SQS needs beyond it.

    - A delivery token, made here from the SQS message id and handed to the pool process in the
      request (``tasklane_delivery``), so the claim and every later write of the run name this
      receive, and this process can act on the run's claim when the run itself cannot.
    - A heartbeat from the moment the pool accepts the run until it ends.
    - A run lost to its process (killed, OOM) or to its hard time limit: Celery would reject
      the message with requeue, which on SQS re-publishes a copy and then fails in kombu's
      back-off code (``KeyError: 'sqs_message'``), stopping the whole worker. Instead the lost
      run is recorded as a failed attempt of this delivery, and the message is left to come
      back after its back-off, to a task no longer held.
    - A run cancelled because the broker connection was lost gives its claim back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        info = self._message.delivery_info or {}
        self._sqs_message = info.get("sqs_message") or {}
        self._sqs_queue = info.get("sqs_queue")
        self.token = self._request_dict.get(CLAIM_KEY) or delivery_token(
            self._sqs_message.get("MessageId")
        )
        self._request_dict[DELIVERY_KEY] = self.token
        # A tasklane task's eta and expires are the executor's to honour (deferred, nothing
        # held in memory; recorded when expired), not Celery's: Celery would hold an eta
        # message in this process past its visibility timeout, and drop an expired one
        # without a word to the task's row. An adopted task keeps Celery's own: its claim
        # keeps a message held past its visibility timeout from running twice.
        if self._request_dict.get(ROW_KEY) is None:
            self._eta = self._expires = None
        self._heartbeat: Heartbeat | None = None
        self._lost: BaseException | None = None
        self._claimed = CLAIM_KEY in self._request_dict

    @property
    def claim_check(self) -> uuid.UUID | None:
        """The task row this message points at: an adopted task's restored row
        (:func:`restore_claim_checked`), or a tasklane task's one argument."""
        row = self._request_dict.get(ROW_KEY)
        try:
            if row is not None:
                return uuid.UUID(row)
            (task_id,) = self._args
            return uuid.UUID(str(task_id))
        except (TypeError, ValueError):
            return None

    def revoked(self) -> bool:
        """Celery asks this right before it hands the run to the pool (and at receipt, for a
        message that can expire): an adopted task's run claims its row here, and a run that
        cannot claim it is skipped as a revoked one is, its message acknowledged (the task
        has ended), left for later (another delivery holds it) or dead-lettered (poison)."""
        if super().revoked():
            return True
        row = self._request_dict.get(ROW_KEY)
        if row is None or self._claimed or not self._due():
            return False
        verdict = claim_adopted(self.task_name, uuid.UUID(row), self.token)
        if isinstance(verdict, Attempt):
            self._claimed = True
            return False
        worker_state.task_ready(self)
        self._already_revoked = True
        settle_unclaimed(self._message, verdict)
        return True

    def _due(self) -> bool:
        return self._eta is None or self._eta <= datetime.now(UTC)

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        super().on_accepted(pid, time_accepted)
        receipt, task_id = self._sqs_message.get("ReceiptHandle"), self.claim_check
        if receipt and self._sqs_queue and task_id:
            self._heartbeat = Heartbeat(
                self._sqs_queue,
                receipt,
                task_id,
                self.token,
                lease_seconds(self._sqs_queue),
                alive=lambda: self in worker_state.active_requests,
                until=time.monotonic()
                + (self.task.time_limit or registry.MAX_TIME_LIMIT_S)
                + BEATS_GRACE_S,
            )

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False):
        # kept for reject(requeue=True), which Celery calls only for a lost process or a hard
        # time limit (a failure of the task itself is recorded by the run)
        self._lost = self._lost or getattr(exc_info.exception, "exc", exc_info.exception)
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._lost = TimeLimitExceeded(
                f"the run was killed at its hard time limit ({timeout} s)"
            )
        super().on_timeout(soft, timeout)

    def acknowledge(self) -> None:
        self._stop_heartbeat()
        super().acknowledge()

    def reject(self, requeue: bool = False) -> None:
        self._stop_heartbeat()
        if requeue and isinstance(self._lost, Reject) and self._requeue_adopted():
            return
        if requeue:  # a lost run (see the class): never Celery's requeue on SQS
            outcome = self._record_lost()
            if outcome is not None and outcome.acknowledge:
                super().acknowledge()  # its last attempt, or cancelled: the message is done
                return
            requeue = False  # left in the queue: the back-off policy brings it back soon
        super().reject(requeue)

    def _requeue_adopted(self) -> bool:
        """An adopted task raised ``Reject(requeue=True)``: as in Celery, its message goes back
        to the queue as it was sent (the claim check, redelivered), and its claim is given
        back, so the redelivery runs it."""
        original = getattr(self._message, ORIGINAL, None)
        task_id = self.claim_check
        if original is None or task_id is None:
            return False
        try:
            default_store().release(task_id, self.token)
        except StoreUnavailable as exc:  # the lease then ends by itself
            logger.warning("could not release a run", extra=task_fields(task_id, error=str(exc)))
        self._message.body, self._message._decoded_cache = original
        (self._message.headers or {}).pop(ROW_KEY, None)
        super().reject(requeue=True)
        return True

    def _record_lost(self) -> Outcome | None:
        task_id = self.claim_check
        if task_id is None:
            return None
        lost = self._lost or WorkerLostError("the run ended without an outcome")
        try:
            return Executor(default_store()).record_lost(task_id, self.token, lost).outcome
        except Exception as exc:  # the lease then ends by itself, at the visibility timeout
            logger.warning(
                "could not record a lost run", extra=task_fields(task_id, error=str(exc))
            )
            return None

    def _announce_cancelled(self, emit_retry: bool = True) -> None:
        """The broker connection was lost and Celery cancelled the run: give its claim back."""
        self._stop_heartbeat()
        task_id = self.claim_check
        if task_id is not None:
            try:
                default_store().release(task_id, self.token)
            except Exception as exc:
                logger.warning(
                    "could not release a cancelled run", extra=task_fields(task_id, error=str(exc))
                )
        super()._announce_cancelled(emit_retry)


def create_app() -> Celery:
    """tasklane's own worker app: every registered task as a claim-check Celery task."""
    app = configure(Celery("tasklane", set_as_current=False))
    for spec in registry.all_tasks():
        if getattr(spec.fn, ADOPTED, False):  # an adopted Celery app's: that app runs it
            continue
        app.task(name=spec.name, base=ClaimCheckTask, lane=spec.lane.value, shared=False)(spec.fn)
    return app


#: Where a restored message keeps its body as received (a requeue sends that back).
ORIGINAL = "tasklane_claim_check"


def restore_claim_checked(app: Celery, message: Any) -> Verdict | None:
    """Put an adopted task's arguments and embed back in its received message, from its row,
    before Celery makes a request of it: the task, its signals and its canvas see the message
    as it was sent. A message due now also claims the row here, in the same round trip (one
    with an eta claims it when Celery runs it: :meth:`ClaimCheckRequest.revoked`).

    Returns None when the message is Celery's to handle now (restored, or not a claim check
    of an adopted task), or why its run cannot start (:class:`Verdict`: the caller settles
    the message). Raises :class:`StoreUnavailable` while Postgres is."""
    headers = message.headers or {}
    name = headers.get("task")
    if not isinstance(app.tasks.get(name), AdoptedTask):
        return None
    try:
        args, kwargs, _embed = message.decode()
        (row,) = args
        row = uuid.UUID(row)
    except Exception:  # not a claim check: Celery handles it as it is
        return None
    if kwargs:
        return None
    if headers.get("eta") is None:
        sqs_message = (getattr(message, "delivery_info", None) or {}).get("sqs_message") or {}
        token = delivery_token(sqs_message.get("MessageId"))
        step = claim_adopted(name, row, token)
        if isinstance(step, Verdict):
            return step
        payload = payloads.loads(step.payload_json)
        headers[CLAIM_KEY] = token
    else:
        payload = default_store().payload_of(row)
    if not isinstance(payload, dict):
        return Verdict(Outcome.POISON, f"no arguments of task {row} to read")
    body = restored_message(payload)
    setattr(message, ORIGINAL, (message.body, message._decoded_cache))
    message.body = kombu_json.dumps(body)
    message._decoded_cache = body
    headers[ROW_KEY] = str(row)
    return None


def settle_unclaimed(message: Any, verdict: Verdict) -> None:
    """A received message whose task could not be claimed: acknowledged when the task has
    ended, dead-lettered when it is poison, else left for its back-off to bring it back."""
    if verdict.outcome.acknowledge:
        message.ack()
    elif verdict.outcome is Outcome.POISON:  # copied to the DLQ, then deleted once, by the ack
        _dead_letter_delivery(message, f"claim-checked message: {verdict.reason}"[:1000])
        message.ack()
    else:
        message.reject(requeue=False)


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
def _unknown_task(message: Any = None, name: str = "", **_: object) -> None:
    """A message for a task this worker does not know (Celery has rejected it).

    If its row exists under that name, the task is real and this worker is behind (a deploy in
    progress): the message is left to come back soon, for a worker that knows it. Otherwise it
    is poison, and goes to the DLQ now.
    """
    info = getattr(message, "delivery_info", None) or {}
    sqs_message = info.get("sqs_message") or {}
    unknown = UnknownTask(f"no task named {name!r} is registered in this worker")
    try:
        delivery = Delivery(name, codec.decode(sqs_message["Body"]).claim_check, "")
        verdict = Executor(default_store()).unknown_here(delivery, unknown)
    except StoreUnavailable as exc:  # cannot tell yet whether the task is real: not poison
        logger.warning(
            "unknown task, database unavailable: the message is left", extra={"task": name}
        )
        verdict = Verdict(Outcome.BUSY, str(exc), UNKNOWN_HERE_BACKOFF_S)
    except (KeyError, TasklaneError) as exc:  # not a claim-check message
        verdict = Verdict(Outcome.POISON, str(exc))
    if verdict.outcome is Outcome.BUSY and verdict.retry_in:
        broker.change_visibility(info["sqs_queue"], sqs_message["ReceiptHandle"], verdict.retry_in)
    elif verdict.outcome.acknowledge:  # offered again as a fresh message, or already done
        broker.sqs().delete_message(
            QueueUrl=info["sqs_queue"], ReceiptHandle=sqs_message["ReceiptHandle"]
        )
    elif verdict.outcome is Outcome.POISON:
        _move_to_dead_letters(message, f"no task named {name!r} is registered in this worker")


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but poison goes to the DLQ after one delivery instead of looping
    (rejected) or vanishing (acknowledged): a message of another content type (pickle, yaml),
    an invalid task message, or one that does not decode. And an adopted task's claim-checked
    message gets its arguments back (:func:`restore_claim_checked`) before Celery sees it."""

    def create_task_handler(self, promise: Any = None) -> Any:
        handle = (
            super().create_task_handler()
            if promise is None
            else (super().create_task_handler(promise))
        )
        app = self.app

        def on_task_received(message: Any) -> Any:
            try:
                verdict = restore_claim_checked(app, message)
            except StoreUnavailable:
                logger.warning("database unavailable: a claim-checked message is left")
                return message.reject(requeue=False)  # back-off: it comes back soon
            if verdict is not None:
                return settle_unclaimed(message, verdict)
            return handle(message)

        return on_task_received

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)  # logs and rejects
        _move_to_dead_letters(message, f"invalid task message: {exc}"[:1000])

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _dead_letter_delivery(message, f"undecodable message: {exc}"[:1000])
        super().on_decode_error(message, exc)  # logs and acknowledges

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """A body kombu could not decode to a message at all (not JSON, or nested too deep:
        :mod:`tasklane.celery_transport`), or one without a task header."""
        super().on_unknown_message(body, message)  # logs and rejects: it would loop
        _move_to_dead_letters(message, "undecodable message: not a Celery task message")


@signals.task_postrun.connect
def _end_adopted_run(task: Any = None, state: str | None = None, **_: object) -> None:
    """An adopted task's run has ended in the pool: its row leaves ``running`` (Celery's
    backend stored the result, unless the task ignores results; a retry or a replacement has
    already made the row ``queued`` again, under a new message)."""
    request = getattr(task, "request", None)
    row = getattr(request, ROW_KEY, None)
    if row is None or state not in states.READY_STATES:
        return
    if not (task.ignore_result or getattr(request, "ignore_result", False)):
        return  # Celery's backend has stored the outcome, and ended the row with it
    from tasklane.results import STATUS_OF_STATE

    try:
        default_store().end_run(
            uuid.UUID(row), getattr(request, DELIVERY_KEY, ""), STATUS_OF_STATE[state]
        )
    except StoreUnavailable as exc:  # the lease then ends by itself; the claim sees the outcome
        logger.warning("could not end an adopted run", extra=task_fields(row, error=str(exc)))


@signals.worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Each pool process opens its own connections (sockets do not survive a fork)."""
    database.reset()
    broker.sqs.cache_clear()


app = create_app()
