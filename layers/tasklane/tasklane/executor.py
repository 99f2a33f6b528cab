"""Running tasks: claim, load the payload, call the function, record the outcome.

Both lanes go through here, so a task behaves the same in either. Each delivery ends in an
:class:`Outcome` that tells the lane's adapter what to do with the message:

==============  ===========================================  =====================
outcome         meaning                                      the message
==============  ===========================================  =====================
SUCCEEDED       ran, result stored                           acknowledge
FAILED          ran, failed its last attempt (max_attempts)  acknowledge
DONE            already finished (a duplicate delivery)      acknowledge
RETRY           ran and failed; it will be tried again       leave (back-off)
BUSY            another delivery holds a live claim          leave
POISON          undecodable, unknown task, no row            dead-letter at once
==============  ===========================================  =====================
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from tasklane import metrics, registry
from tasklane.errors import InvalidRequest, StoreUnavailable, UnknownTask
from tasklane.lifecycle import Status, retry_delay_seconds, status_after_failure
from tasklane.logs import logger, task_fields
from tasklane.store import Claimed, NotClaimed, TaskStore

T = TypeVar("T")


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
    #: For RETRY: how long the message should stay invisible before the next attempt.
    retry_in: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A claim held by this delivery: run it with :meth:`Executor.run`."""

    id: uuid.UUID
    spec: registry.TaskSpec
    number: int
    payload: Any


@dataclass(frozen=True, slots=True)
class Pointer:
    """What a message says: run task ``task`` on row ``id``."""

    task: str
    id: uuid.UUID


def error_of(exc: BaseException) -> dict[str, str]:
    """How a failure is stored: the exception's type and message, and a short traceback."""
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc, limit=-8))[-4000:],
    }


class Executor:
    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def claim(
        self, pointers: Sequence[Pointer], lease_seconds: float, deadline: float | None = None
    ) -> list[Attempt | Verdict]:
        """Claim the tasks of a batch in one round trip; one entry per pointer, in order.

        A pointer to a task this process does not know is poison and is not claimed (claiming
        would count an attempt it cannot make). The same task twice in one batch runs once.
        While Postgres is unreachable the claim is retried until ``deadline``: a delivery given
        back at once would spend one of the message's receives on an outage.
        """
        specs: dict[uuid.UUID, registry.TaskSpec] = {}
        unknown: dict[int, Verdict] = {}
        for i, p in enumerate(pointers):
            try:
                specs[p.id] = registry.get(p.task)
            except UnknownTask as exc:
                unknown[i] = Verdict(Outcome.POISON, str(exc))
        wanted = {i: s.name for i, s in specs.items()}
        claims = self._persist(lambda: self.store.claim(wanted, lease_seconds), deadline, {})

        out: list[Attempt | Verdict] = []
        running: set[uuid.UUID] = set()
        for i, p in enumerate(pointers):
            claim = claims.get(p.id)
            if i in unknown:
                out.append(unknown[i])
            elif isinstance(claim, Claimed) and p.id not in running:
                running.add(p.id)
                out.append(Attempt(p.id, specs[p.id], claim.attempt, claim.payload))
            elif isinstance(claim, NotClaimed):
                out.append(self._not_claimed(p, claim))
            else:
                out.append(Verdict(Outcome.BUSY, "same task twice in one batch"))
        return out

    @staticmethod
    def _not_claimed(pointer: Pointer, claim: NotClaimed) -> Verdict:
        if claim.status is None:
            return Verdict(Outcome.POISON, f"no task row with id {pointer.id}")
        if claim.task != pointer.task:
            return Verdict(
                Outcome.POISON, f"message names task {pointer.task!r}, row is {claim.task!r}"
            )
        if claim.status.terminal:
            return Verdict(Outcome.DONE, f"task already {claim.status}")
        return Verdict(Outcome.BUSY, "another delivery holds the task")

    def _persist(self, write: Callable[[], T], deadline: float | None, fields: dict) -> T:
        """Run a store call, retrying while Postgres is unreachable until ``deadline``.

        For an outcome, the task has already run: giving up would run it again on the next
        delivery, so an attempt holds on to its outcome for as long as it may.
        """
        pause = 0.2
        while True:
            try:
                return write()
            except StoreUnavailable:
                if deadline is None or time.monotonic() + pause >= deadline:
                    raise
                logger.warning("database unavailable, retrying the outcome", extra=fields)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def run(self, attempt: Attempt, deadline: float | None = None) -> Verdict:
        """Run a claimed task and record its outcome (only while this attempt holds the claim).

        ``deadline`` (``time.monotonic()``) bounds how long the outcome may wait for Postgres.
        """
        fields = task_fields(attempt.id, attempt.spec.name, attempt=attempt.number)
        logger.info("task started", extra=fields)
        try:
            result = attempt.spec.fn(attempt.payload)
            result_json = json.dumps(result, ensure_ascii=False)
        except Exception as exc:  # a task may raise anything; it is recorded, never propagated
            return self._failed(attempt, exc, fields, deadline)
        try:
            stored = self._persist(
                lambda: self.store.succeed(attempt.id, attempt.number, result_json),
                deadline,
                fields,
            )
        except InvalidRequest as exc:  # a result Postgres cannot hold fails the attempt
            return self._failed(attempt, exc, fields, deadline)
        if not stored:
            logger.warning("claim lost before the result was stored", extra=fields)
            return Verdict(Outcome.DONE, "claim lost")
        logger.info("task succeeded", extra=fields)
        metrics.count(metrics.SUCCEEDED, attempt.spec.lane)
        return Verdict(Outcome.SUCCEEDED)

    def _failed(
        self, attempt: Attempt, exc: Exception, fields: dict, deadline: float | None
    ) -> Verdict:
        status = status_after_failure(attempt.number, attempt.spec.max_attempts)
        error = error_of(exc)
        stored = self._persist(
            lambda: self.store.fail(attempt.id, attempt.number, error, status), deadline, fields
        )
        logger.warning(
            "task failed",
            extra=fields | {"error_type": type(exc).__name__, "final": status is Status.FAILED},
        )
        if not stored:
            return Verdict(Outcome.DONE, "claim lost")
        metrics.count(metrics.ATTEMPTS_FAILED, attempt.spec.lane)
        if status is Status.FAILED:
            metrics.count(metrics.FAILED, attempt.spec.lane)
            return Verdict(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
        return Verdict(
            Outcome.RETRY, f"{type(exc).__name__}: {exc}", retry_delay_seconds(attempt.number)
        )
