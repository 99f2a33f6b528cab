"""Running tasks: claim, load the payload, call the function, record the outcome.

Both lanes go through here, so a task behaves the same in either. A :class:`Delivery` is one
receive of one message; its token is written into the claim, and every later write of that
attempt is fenced on it. Each delivery ends in a :class:`Verdict` that tells the lane's adapter
what to do with the message:

==============  ===========================================  =====================
outcome         meaning                                      the message
==============  ===========================================  =====================
SUCCEEDED       ran, result stored                           acknowledge
FAILED          ran, failed for good (last attempt, or its   acknowledge
                payload cannot be loaded)
DONE            nothing to run: already finished, or         acknowledge
                expired, or deferred to its eta
RETRY           ran and failed; it will be tried again       leave (back-off)
BUSY            another delivery holds a live claim, or the  leave (``retry_in``)
                task is not due / not known here yet
POISON          undecodable, no such row, wrong task name    dead-letter at once
==============  ===========================================  =====================
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from tasklane import metrics, payloads, registry, sending
from tasklane.config import settings
from tasklane.errors import (
    Cancelled,
    InvalidRequest,
    PayloadUnreadable,
    ResultNotStorable,
    StoreUnavailable,
    TaskNotFound,
    TimeLimitExceeded,
    UnknownTask,
)
from tasklane.lifecycle import Status, retry_delay_seconds
from tasklane.limits import DEFER_MAX_S, ORDER_BACKSTOP_S
from tasklane.logs import logger, task_fields
from tasklane.store import Claim, Claimed, Failure, NotClaimed, Settled, TaskRecord, TaskStore

T = TypeVar("T")

#: A rate limit's turn this close is waited for in the process (seconds), not by a message.
WAIT_HERE_S = 1.0
#: How long a message for a task this consumer does not know waits before it is offered again
#: (a deploy in progress: another consumer, or this one after its update, will know it).
UNKNOWN_HERE_BACKOFF_S = 60
#: How long such a task is offered again as a fresh message (not spending its message's
#: receives). Past that, its message is left to run out of receives: the dead-letter path ends
#: a task that no consumer ever knows.
UNKNOWN_HERE_PATIENCE_S = 3600
#: The longest a message may be left invisible (SQS's cap on a message's visibility timeout).
MAX_VISIBILITY_S = 12 * 3600


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DONE = "done"
    RETRY = "retry"
    BUSY = "busy"
    POISON = "poison"

    @property
    def acknowledge(self) -> bool:
        """Whether the message may be deleted from its queue."""
        return self in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.DONE)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str = ""
    #: For RETRY and BUSY: how long the message should stay invisible before it comes back.
    retry_in: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One receive of one message: run task ``task`` on row ``id``.

    ``token`` (:func:`delivery_token`) names this receive; it is what holds the claim.
    """

    task: str
    id: uuid.UUID
    token: str
    #: From a stock Celery message's headers: not to run before ``eta`` (countdown), nor after
    #: ``expires``.
    eta: datetime | None = None
    expires: datetime | None = None

    def claim(self) -> Claim:
        return Claim(self.id, self.task, self.token)

    @property
    def timed(self) -> bool:
        return self.eta is not None or self.expires is not None


def delivery_token(message_id: str | None) -> str:
    """A new token for one receive of message ``message_id``: the message id (which a dead
    letter keeps) and a random part (which tells two receives of one message apart)."""
    return f"{message_id or 'local'}#{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True, slots=True)
class Committed:
    """A transactional run's outcome, already committed with its writes (``status`` None: the
    claim was lost, and everything rolled back)."""

    result_json: str
    status: Status | None


def _result_json(result: Any, max_bytes: int) -> str:
    """A run's result as the JSON text to record; :class:`ResultNotStorable` (or
    :class:`ResultTooLarge`) when it cannot be: the same run would make it again."""
    try:
        text = payloads.dumps(result, "result")
    except InvalidRequest as exc:  # NaN, a set, too deep
        raise ResultNotStorable(str(exc)) from None
    return payloads.check_result_size(text, max_bytes)


class _ClaimLost(Exception):
    """Rolls a transactional run back: its delivery no longer holds the claim."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """A claim held by a delivery: run it with :meth:`Executor.run`."""

    delivery: Delivery
    spec: registry.Task
    number: int
    payload_json: str
    #: Who submitted the task (its child tasks are theirs too).
    owner: str = ""
    #: Whether its success may release workflow steps (see :meth:`TaskStore.settle`).
    releases: bool = True

    @property
    def id(self) -> uuid.UUID:
        return self.delivery.id


def error_of(exc: BaseException) -> dict[str, str]:
    """How a failure is stored: the exception's type and message, and a short traceback."""
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc, limit=-8))[-4000:],
    }


def _send_released(released: Sequence[TaskRecord], store: TaskStore) -> None:
    """Send the workflow steps an outcome released, once it is committed. One that cannot be
    sent now stays ``pending``, and the reconciler sends it, as any task whose send failed."""
    if not released:
        return

    try:
        sending.send_committed(released, store=store)
    except Exception as exc:  # never lose the outcome's verdict over a send
        logger.warning(
            "released workflow steps not sent: the reconciler will",
            extra={"count": len(released), "error": str(exc)},
        )


@dataclass(frozen=True, slots=True)
class CurrentTask:
    """The task running in this context (:func:`current_task`)."""

    id: uuid.UUID
    name: str
    attempt: int
    store: TaskStore
    #: Who submitted it; tasks it submits are theirs too.
    owner: str = ""

    @property
    def cancel_requested(self) -> bool:
        """Whether the task was asked to stop (``POST /tasks/{id}/cancel``); read now."""
        return self.store.cancel_requested(self.id)

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the task was asked to stop: its run ends ``cancelled``."""
        if self.cancel_requested:
            raise Cancelled(f"task {self.id} was asked to stop")


_current: ContextVar[CurrentTask | None] = ContextVar("tasklane_current_task", default=None)


def current_task() -> CurrentTask | None:
    """The task running here, for the code of that task (None outside a run)."""
    return _current.get()


@contextlib.contextmanager
def _running(attempt: Attempt, store: TaskStore) -> Iterator[None]:
    token = _current.set(
        CurrentTask(attempt.id, attempt.spec.name, attempt.number, store, attempt.owner)
    )
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in the task after ``seconds`` (SIGALRM).

    Only on the main thread, where signals are delivered (a Lambda handler, a Celery pool
    process); elsewhere the lane's own limit applies (the function's timeout, Celery's hard
    time limit).
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(f"the task ran past its time limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Executor:
    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def claim(
        self, delivery: Delivery, lease_seconds: float, deadline: float | None = None
    ) -> Attempt | Verdict:
        """Claim the delivery's task, or say why not.

        A task this process does not know is not claimed (claiming would count a run it
        cannot make). While Postgres is unreachable the claim is retried until ``deadline``:
        a delivery given back at once would spend one of the message's receives on an outage.
        """
        try:
            spec = registry.get(delivery.task)
        except UnknownTask as exc:
            return self.unknown_here(delivery, exc)
        if delivery.timed and (verdict := self._on_time(delivery)) is not None:
            return verdict
        if not spec.limited or sending.INLINE.get() is not None:  # eager: run in turn, here
            claim = self._persist(
                lambda: self.store.claim(delivery.claim(), lease_seconds), deadline, {}
            )
            return self._attempt_or_verdict(delivery, spec, claim)
        return self._attempt_or_verdict(
            delivery, spec, self._claim_limited(delivery, spec, lease_seconds, deadline)
        )

    def _claim_limited(
        self, delivery: Delivery, spec: registry.Task, lease_seconds: float, deadline: float | None
    ) -> Claimed | NotClaimed:
        """A claim under the task's limits. A rate limit's turn less than a second away is
        waited for here (a message's delay is whole seconds: the starts it spaces would come
        back together), then the claim is made with it."""
        for _ in range(3):
            claim = self._persist(
                lambda: self.store.claim_limited(
                    delivery.claim(),
                    lease_seconds,
                    spec.concurrency,
                    spec.rate_limit,
                    spec.ordering,
                ),
                deadline,
                {},
            )
            if not isinstance(claim, NotClaimed) or claim.wait_s is None:
                return claim
            if claim.wait_s > WAIT_HERE_S:
                return claim
            time.sleep(claim.wait_s)
        return claim

    def _on_time(self, delivery: Delivery) -> Verdict | None:
        """A message with an ``expires`` past, or an ``eta`` to come: acknowledged, its task
        recorded as expired, or deferred (no message is held while it waits). None: run now."""
        now = datetime.now(UTC)
        fields = task_fields(delivery.id, delivery.task)
        if delivery.expires is not None and delivery.expires <= now:
            if self.store.expire(delivery.id, delivery.task, delivery.expires):
                logger.warning("task expired before it ran", extra=fields)
                return Verdict(Outcome.DONE, "expired")
            return self._standing(delivery)
        if delivery.eta is not None and delivery.eta > now:
            deferred = sending.defer(
                delivery.id, delivery.task, delivery.eta, store=self.store, expires=delivery.expires
            )
            if deferred is not None:
                logger.info("deferred to its eta", extra=fields | {"eta": delivery.eta})
                return Verdict(Outcome.DONE, f"deferred to {delivery.eta.isoformat()}")
            return self._standing(delivery)
        return None

    def _standing(self, delivery: Delivery) -> Verdict:
        """What a message means for a task it cannot act on, from the task's row."""
        try:
            record = self.store.get(delivery.id)
        except TaskNotFound:
            return self._why_not(delivery, NotClaimed(delivery.id, None, None))
        return self._why_not(
            delivery, NotClaimed(delivery.id, record.status, record.task, record.run_at)
        )

    def unknown_here(self, delivery: Delivery, exc: UnknownTask) -> Verdict:
        """No task of that name here. If its row exists under that name, the task is real and
        this consumer is behind (a deploy in progress): it is offered again a minute later, for
        one that knows it. Once no consumer has known it for an hour (``unknown_since``, which
        a claim clears), it ends ``failed`` (``UnknownTask``), so it never loops; a retry after
        a deploy that has its code runs it."""
        try:
            record = self.store.get(delivery.id)
        except TaskNotFound:
            return Verdict(Outcome.POISON, str(exc))
        if record.task != delivery.task:
            return Verdict(Outcome.POISON, str(exc))
        if record.status.terminal:
            return Verdict(Outcome.DONE, f"task already {record.status}")
        fields = task_fields(delivery.id, delivery.task)
        if record.status is Status.RUNNING:  # a consumer that knows it holds it: leave it
            return Verdict(Outcome.BUSY, f"{exc} here", UNKNOWN_HERE_BACKOFF_S)
        status = self.store.unknown_here(delivery.id, delivery.task, UNKNOWN_HERE_PATIENCE_S)
        if status is None:  # not waiting to run any more (scheduled, or it moved meanwhile)
            return self._standing(delivery)
        if status is Status.FAILED:
            logger.error("no consumer knows this task: failed", extra=fields)
            metrics.count(metrics.FAILED, record.lane)
            return Verdict(Outcome.DONE, f"{exc} anywhere: failed")
        logger.warning("task not known to this consumer: left for one that knows it", extra=fields)
        return self._later(delivery, UNKNOWN_HERE_BACKOFF_S, f"{exc} here")

    def _later(self, delivery: Delivery, seconds: int, reason: str) -> Verdict:
        """Offer the task again in ``seconds`` as a fresh message, and let this one go: a wait
        that is not the task's doing spends none of its message's receives (which decide when
        SQS dead-letters it). If the send fails, this message is left instead."""
        try:
            if sending.resend(delivery.id, seconds, store=self.store):
                return Verdict(Outcome.DONE, f"{reason}: offered again in {seconds} s")
        except Exception as exc:  # the message itself is left, as before
            logger.warning("could not offer again", extra=task_fields(delivery.id, error=str(exc)))
        return Verdict(Outcome.BUSY, reason, min(seconds, MAX_VISIBILITY_S))

    def _attempt_or_verdict(
        self, delivery: Delivery, spec: registry.Task, claim: Claimed | NotClaimed
    ) -> Attempt | Verdict:
        if isinstance(claim, Claimed):
            return Attempt(
                delivery, spec, claim.attempt, claim.payload_json, claim.owner, claim.releases
            )
        return self._why_not(delivery, claim)

    def _why_not(self, delivery: Delivery, claim: NotClaimed) -> Verdict:
        """Why a delivery does not run its task, from the row as its claim found it."""
        if claim.status is None:
            return Verdict(Outcome.POISON, f"no task row with id {delivery.id}")
        if claim.task != delivery.task:
            return Verdict(
                Outcome.POISON, f"message names task {delivery.task!r}, row is {claim.task!r}"
            )
        if claim.status.terminal:
            return Verdict(Outcome.DONE, f"task already {claim.status}")
        expires_at = claim.expires_at
        expired = expires_at is not None and expires_at <= datetime.now(UTC)
        if expires_at is not None and expired and claim.status is not Status.RUNNING:
            if self.store.expire(delivery.id, delivery.task, expires_at):
                logger.warning("task expired before it ran", extra=task_fields(delivery.id))
            return Verdict(Outcome.DONE, "expired")
        if claim.run_at is not None and claim.status is not Status.RUNNING:
            wait = (claim.run_at - datetime.now(UTC)).total_seconds()
            if wait > 0:  # arrived before it is due: offered again when it is
                return self._later(delivery, math.ceil(wait), "not due yet")
        if claim.waiting_on is not None:  # over a limit: not a run, and no receive spent
            fields = task_fields(delivery.id, delivery.task, waiting_on=claim.waiting_on)
            logger.info("task waits for its limit", extra=fields)
            if claim.wait_s is not None:  # a rate limit's turn: back just before it
                wait = max(1, math.floor(claim.wait_s))
            elif claim.behind is not None:  # the end of the one ahead sends it: a backstop
                wait = random.randint(ORDER_BACKSTOP_S, 2 * ORDER_BACKSTOP_S)  # nosec B311
            else:  # a concurrency limit: soon, spread out (random for spreading, no secret)
                wait = random.randint(1, DEFER_MAX_S)  # nosec B311
            return self._later(delivery, wait, claim.waiting_on)
        if claim.status is Status.RUNNING:
            return Verdict(Outcome.BUSY, "another delivery holds the task")
        return Verdict(Outcome.BUSY, f"the task is {claim.status}")

    def _persist(self, write: Callable[[], T], deadline: float | None, fields: dict) -> T:
        """Run a store call, retrying while Postgres is unreachable until ``deadline``.

        Every write is fenced on the delivery's token, so a retry after a lost reply finds its
        own committed effect rather than a lost claim. For an outcome, the task has already
        run: giving up would run it again on the next delivery, so an attempt holds on to its
        outcome for as long as it may.
        """
        pause = 0.2
        while True:
            try:
                return write()
            except StoreUnavailable:
                left = None if deadline is None else deadline - time.monotonic()
                if left is None or left <= 0:
                    raise
                logger.warning("database unavailable, retrying", extra=fields)
                time.sleep(min(pause, left))  # the last try is at the deadline, not before it
                pause = min(pause * 2, 2.0)

    def run(
        self,
        attempt: Attempt,
        deadline: float | None = None,
        *,
        then: Callable[[], Delivery | None] | None = None,
        lease_seconds: float = 0,
        limit_s: float | None = None,
        patience_s: float | None = None,
    ) -> tuple[Verdict, Attempt | Verdict | None]:
        """Run a claimed task and record its outcome, only while its delivery holds the claim.

        ``then``, asked once the task has returned: the delivery its consumer will run next,
        claimed in the same round trip as this outcome (that claim is returned second; a
        delivery of a task unknown here is not chained). How long the outcome may wait for
        Postgres: until ``deadline`` (``time.monotonic()``, the invocation's end), or for
        ``patience_s`` counted from when the task returns (a worker's run has no deadline of
        its own, and a long run must not have spent its patience before it ends). ``limit_s``
        stops the task itself (:func:`time_limit`).
        """

        def outcome_deadline() -> float | None:
            return deadline if patience_s is None else time.monotonic() + patience_s

        fields = task_fields(attempt.id, attempt.spec.name, attempt=attempt.number)
        logger.info("task started", extra=fields)
        outcome: str | Failure
        try:
            payload = payloads.loads(attempt.payload_json)
        except PayloadUnreadable as exc:
            outcome = Failure(error_of(exc), final=True)
        else:
            if attempt.spec.transactional:
                done = self._run_in_transaction(attempt, payload, limit_s, outcome_deadline, fields)
                if isinstance(done, Verdict):
                    return done, None
                outcome = done
            else:
                outcome = self._call(attempt, payload, limit_s)
            if isinstance(outcome, Committed):
                self._next_in_line(attempt, outcome.status)
                return self._verdict(attempt, outcome.result_json, outcome.status, fields), None
        following = then() if then is not None else None
        next_spec = registry.find(following.task) if following is not None else None
        # (a task under a limit is claimed on its own, under the limit's lock)
        chain = next_spec is not None and not next_spec.limited
        next_claim = following.claim() if following is not None and chain else None

        settle_by = outcome_deadline()

        def settle(outcome: str | Failure) -> Settled:
            return self._persist(
                lambda: self.store.settle(
                    attempt.id,
                    attempt.delivery.token,
                    outcome,
                    next_claim,
                    lease_seconds,
                    releases=attempt.releases,
                ),
                settle_by,
                fields,
            )

        try:
            status, ahead, released = settle(outcome)
        except InvalidRequest as exc:  # a result Postgres cannot hold (\u0000): the same run
            outcome = Failure(error_of(exc), final=True)  # would make it again; do not repeat it
            status, ahead, released = settle(outcome)
        _send_released(released, self.store)
        self._next_in_line(attempt, status)
        next_step = None
        if following is not None and chain and ahead is not None:
            next_step = self._attempt_or_verdict(following, next_spec, ahead)
        return self._verdict(attempt, outcome, status, fields), next_step

    def _next_in_line(self, attempt: Attempt, status: Status | None) -> None:
        """An ordered task that ended releases the next of its key's line, and sends it: a
        key runs a task at a time, a message apart (the tasks behind wait unsent)."""
        if attempt.spec.ordering is None or status is None or not status.terminal:
            return
        try:
            following = self.store.release_next(attempt.id)
            if following is not None:
                sending.send([following], self.store, settings())
        except Exception as exc:  # left pending or waiting: the reconciler sends it
            logger.warning(
                "could not send the next in line", extra=task_fields(attempt.id, error=str(exc))
            )

    def _run_in_transaction(
        self,
        attempt: Attempt,
        payload: Any,
        limit_s: float | None,
        deadline: Callable[[], float | None],
        fields: dict,
    ) -> Committed | Failure | Verdict:
        """A transactional task: its writes through ``db`` and its ``succeeded`` outcome commit
        in one transaction, and only while its delivery holds the claim. If it raises, its
        writes roll back and the failure is recorded as usual. If Postgres is lost before the
        commit, nothing of the run remains: the claim is given back, uncounted, and the next
        delivery runs it cleanly. A lost commit reply is told apart by reading the outcome."""
        token, result_json = attempt.delivery.token, "null"
        try:
            with self.store.transaction(limit_s) as db:
                with _running(attempt, self.store), time_limit(limit_s):
                    result = attempt.spec.fn(payload, db)
                result_json = _result_json(result, self.store.max_result_bytes)
                try:
                    status, _, released = self.store.settle(
                        attempt.id, token, result_json, connection=db
                    )
                except InvalidRequest as exc:  # \u0000: the same run makes it again
                    raise ResultNotStorable(str(exc)) from None
                if status is None:
                    raise _ClaimLost
            _send_released(released, self.store)  # committed: the workflow's next steps may go
            return Committed(result_json, status)
        except _ClaimLost:
            return Committed(result_json, None)  # rolled back: another delivery holds it
        except ResultNotStorable as exc:  # its writes rolled back with it; not retried
            return Failure(error_of(exc), final=True)
        except StoreUnavailable:
            by = deadline()  # counted from the end of the run
            status = self._persist(lambda: self.store.outcome_of(attempt.id, token), by, fields)
            if status is Status.SUCCEEDED:
                return Committed(result_json, status)  # it did commit: only the reply was lost
            self._persist(lambda: self.store.release(attempt.id, token), by, fields)
            logger.warning("database lost before the run committed: run again", extra=fields)
            return Verdict(Outcome.RETRY, "database lost before the run committed", 2)
        except Exception as exc:  # the task's own failure: its writes are rolled back
            return Failure(error_of(exc))

    def _call(self, attempt: Attempt, payload: Any, limit_s: float | None) -> str | Failure:
        try:
            with _running(attempt, self.store), time_limit(limit_s):
                result = attempt.spec.fn(payload)
        except Exception as exc:  # a task may raise anything; it is recorded, never propagated
            return Failure(error_of(exc))
        try:
            return _result_json(result, self.store.max_result_bytes)
        except ResultNotStorable as exc:  # the same run would make it again
            return Failure(error_of(exc), final=True)

    def record_lost(self, task_id: uuid.UUID, token: str, exc: BaseException) -> Verdict:
        """A run cut short outside the task's own code (its process killed, its time limit
        reached): record it as a failed attempt of the delivery ``token``, from the process
        that still holds the message."""
        status = self.store.settle(task_id, token, Failure(error_of(exc))).status
        fields = task_fields(task_id, error_type=type(exc).__name__)
        if status is None:
            logger.warning("lost run's claim already gone", extra=fields)
            return Verdict(Outcome.BUSY, "claim no longer held")
        logger.warning("run lost", extra=fields | {"final": status.terminal})
        if status is Status.CANCELLED:
            return Verdict(Outcome.DONE, "cancelled")
        if status is Status.FAILED:
            return Verdict(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
        return Verdict(Outcome.RETRY, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _verdict(
        attempt: Attempt, outcome: str | Failure, status: Status | None, fields: dict
    ) -> Verdict:
        lane = attempt.spec.lane
        if status is None:
            logger.warning("claim lost before the outcome was stored", extra=fields)
            return Verdict(Outcome.DONE, "claim lost")
        if not isinstance(outcome, Failure):
            logger.info("task succeeded", extra=fields)
            metrics.count(metrics.SUCCEEDED, lane)
            return Verdict(Outcome.SUCCEEDED)
        reason = f"{outcome.error['type']}: {outcome.error['message']}"
        if status is Status.CANCELLED:
            logger.info("task stopped when asked: cancelled", extra=fields)
            return Verdict(Outcome.DONE, f"cancelled ({reason})")
        final = status is Status.FAILED
        # once, with what debugging needs: the message and the task's own traceback (an
        # attempt that will run again is a warning; the last one an error)
        (logger.error if final else logger.warning)(
            "task failed" if final else "task failed: will retry",
            extra=fields
            | {
                "error_type": outcome.error["type"],
                "error_message": outcome.error["message"],
                "traceback": outcome.error.get("traceback"),
                "final": final,
            },
        )
        metrics.count(metrics.ATTEMPTS_FAILED, lane)
        if status is Status.FAILED:
            metrics.count(metrics.FAILED, lane)
            return Verdict(Outcome.FAILED, reason)
        return Verdict(Outcome.RETRY, reason, retry_delay_seconds(attempt.number))
