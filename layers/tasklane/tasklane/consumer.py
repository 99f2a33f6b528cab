"""The Lambda lane: an SQS batch in, ``{"batchItemFailures": [...]}`` out.

Powertools' :class:`BatchProcessor` builds the partial-failure response and calls
:meth:`ClaimCheckProcessor.handle_record` for each record in turn. A record's task is claimed
just before it runs, and the claim of the next record rides in the same round trip as this
record's outcome, so a batch of N costs N + 1 statements. Nothing is claimed that will not run
now: when the invocation's time runs short, the records not yet started go back unclaimed, and
a run counts only when it started. Payloads are loaded one at a time, as their task runs. A
record that raises is reported as failed and comes back after its visibility timeout (or the
back-off set on it); everything else is deleted by Lambda.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from tasklane import broker, codec
from tasklane.config import Settings, settings
from tasklane.errors import MessageDecodeError, StoreUnavailable, TasklaneError
from tasklane.executor import Attempt, Delivery, Executor, Outcome, Verdict, delivery_token
from tasklane.lanes import Lane, queue_name, queue_urls
from tasklane.logs import logger
from tasklane.store import default_store

#: Stop starting records when less than this is left of the invocation; they are returned instead.
TIME_RESERVE_S = 5.0
#: A claim outlives its invocation by this margin, then another delivery may take it.
LEASE_MARGIN_S = 30


class RecordFailed(TasklaneError):
    """Raised for a record that must come back (retry, busy, out of time, no DLQ for poison)."""

    code = "record_failed"


class ClaimCheckProcessor(BatchProcessor):
    """An SQS batch processor that claims each record's task as it reaches it."""

    def __init__(self, executor: Executor, config: Settings) -> None:
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)
        self.executor = executor
        self.config = config
        self.order: list[str] = []  # message ids, in the batch's order
        self.steps: dict[str, Delivery | Verdict] = {}
        self.ahead: dict[str, Attempt | Verdict] = {}  # claims made with the previous outcome
        #: Messages whose task cannot run as asked (an eta or expiry no calendar holds): the
        #: message is poison, and the task it names ends ``failed`` rather than wait for a
        #: re-send without that time.
        self.unrunnable: dict[str, tuple[str, Any]] = {}

    def _prepare(self) -> None:
        super()._prepare()
        self.order, self.steps, self.ahead, self.unrunnable = [], {}, {}, {}
        for raw in self.records:
            record = SQSRecord(raw)
            self.order.append(record.message_id)
            try:
                message = codec.decode(record.body)
                task_id = message.claim_check
                try:
                    eta, expires = message.eta_at, message.expires_at
                except MessageDecodeError:
                    self.unrunnable[record.message_id] = (message.task, task_id)
                    raise
                self.steps[record.message_id] = Delivery(
                    message.task, task_id, delivery_token(record.message_id), eta, expires
                )
            except MessageDecodeError as exc:
                self.steps[record.message_id] = Verdict(Outcome.POISON, str(exc))
            except Exception as exc:  # whatever a body does to a decoder, not to the batch
                reason = f"message could not be decoded: {type(exc).__name__}"
                self.steps[record.message_id] = Verdict(Outcome.POISON, reason)
        self.position = {message_id: i for i, message_id in enumerate(self.order)}

    def handle_record(self, record: SQSRecord) -> str:
        step = self._start(record)
        if isinstance(step, Attempt):
            following = self._following(record)
            chained: list[Delivery] = []

            def then() -> Delivery | None:
                """Asked when the run ends: claim the next record now, if it can run in time
                (a second message of the same task is claimed on its own, after this outcome)."""
                if following is None or following.id == step.id or self._out_of_time():
                    return None
                chained.append(following)
                return following

            step, ahead = self.executor.run(
                step,
                self._deadline(),
                then=then,
                lease_seconds=self._lease_seconds(),
                limit_s=self._limit_s(step),
            )
            if chained and ahead is not None:
                self.ahead[self.order[self.position[record.message_id] + 1]] = ahead
        return self._settle(record, step)

    def _start(self, record: SQSRecord) -> Attempt | Verdict:
        """The record's claim: made ahead with the previous outcome, or now."""
        step = self.steps[record.message_id]
        if isinstance(step, Verdict):
            return step
        if (claimed := self.ahead.pop(record.message_id, None)) is not None:
            return claimed
        if self._out_of_time():
            logger.warning("too little time left, returning the record unclaimed")
            raise RecordFailed("invocation out of time")
        try:
            return self.executor.claim(step, self._lease_seconds(), self._deadline())
        except StoreUnavailable as exc:
            logger.warning("database unavailable, returning the record", extra={"error": str(exc)})
            raise RecordFailed(str(exc)) from exc

    def _following(self, record: SQSRecord) -> Delivery | None:
        """The next record's delivery, if it is a plain one (not poison, no eta or expiry)."""
        index = self.position[record.message_id] + 1
        step = self.steps[self.order[index]] if index < len(self.order) else None
        return step if isinstance(step, Delivery) and not step.timed else None

    def _remaining_s(self) -> float | None:
        """Seconds left in this invocation (None outside Lambda, e.g. a direct call)."""
        context = getattr(self, "lambda_context", None)
        return None if context is None else context.get_remaining_time_in_millis() / 1000

    def _lease_seconds(self) -> float:
        """A claim outlives its invocation by a margin; after that, another delivery may take it."""
        remaining = self._remaining_s()
        return self.config.lease_seconds if remaining is None else remaining + LEASE_MARGIN_S

    def _limit_s(self, attempt: Attempt) -> float:
        """How long this run may take: its task's limit, and never past the invocation's
        reserve, so a slow task is stopped and recorded rather than the invocation killed."""
        remaining = self._remaining_s()
        limit = float(attempt.spec.time_limit)
        return limit if remaining is None else max(0.001, min(limit, remaining - TIME_RESERVE_S))

    def _deadline(self) -> float | None:
        """When an attempt must stop waiting for Postgres: before the invocation times out."""
        remaining = self._remaining_s()
        return None if remaining is None else time.monotonic() + remaining - TIME_RESERVE_S

    def _out_of_time(self) -> bool:
        remaining = self._remaining_s()
        return remaining is not None and remaining < TIME_RESERVE_S

    def _settle(self, record: SQSRecord, verdict: Verdict) -> str:
        if verdict.outcome.acknowledge:
            return verdict.outcome.value
        if verdict.outcome is Outcome.POISON:
            logger.error(
                "poison message", extra={"message_id": record.message_id, "reason": verdict.reason}
            )
            if (unrunnable := self.unrunnable.get(record.message_id)) is not None:
                self._fail_unrunnable(*unrunnable, verdict.reason)
            if broker.dead_letter(record.body, Lane.LAMBDA, verdict.reason, self.config):
                return verdict.outcome.value  # now in the DLQ: delete it here
            raise RecordFailed(f"poison: {verdict.reason}")
        if verdict.retry_in is not None:
            self._back_off(record, verdict.retry_in)
        raise RecordFailed(f"{verdict.outcome}: {verdict.reason}")

    def _fail_unrunnable(self, task: str, task_id: Any, reason: str) -> None:
        error = {"type": "InvalidRequest", "message": f"its message cannot run as asked: {reason}"}
        try:
            self.executor.store.fail_waiting(task_id, task, error)
        except StoreUnavailable as exc:  # the message goes to the DLQ all the same
            logger.warning("could not fail an unrunnable task", extra={"error": str(exc)})

    def _back_off(self, record: SQSRecord, seconds: int) -> None:
        """Make the returned message visible again after ``seconds`` (from either of the lambda
        lane's queues: its own and its high-priority one)."""
        name = record.queue_url.rsplit("/", 1)[-1]
        urls = queue_urls(Lane.LAMBDA, self.config)
        url = next((u for u in urls if queue_name(u) == name), None)
        if url is None:
            return
        try:
            broker.change_visibility(url, record.receipt_handle, seconds)
        except Exception as exc:  # back-off is best effort: the queue's timeout still applies
            logger.warning("could not set back-off", extra={"error": str(exc)})


def handle(event: dict, context: Any, executor: Executor | None = None) -> dict:
    """Process one SQS event from the lambda lane's queue; the consumer function's whole job."""
    if executor is None:
        executor = Executor(default_store())
    processor = ClaimCheckProcessor(executor, settings())
    return process_partial_response(
        event=event, record_handler=processor.handle_record, processor=processor, context=context
    )
