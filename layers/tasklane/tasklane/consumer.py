"""The Lambda lane: an SQS batch in, ``{"batchItemFailures": [...]}`` out.

Powertools' :class:`BatchProcessor` builds the partial-failure response; the subclass below only
adds a ``_prepare`` step that decodes every record and claims the whole batch in one round trip
(so a batch of N costs N + 1 statements, not 3N). A record that raises is reported as failed and
comes back after its visibility timeout; everything else is deleted by Lambda.
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
from tasklane.executor import Attempt, Executor, Outcome, Pointer, Verdict
from tasklane.lanes import Lane, queue_name
from tasklane.logs import logger, task_fields

#: Stop starting records when less than this is left of the invocation; they are returned instead.
TIME_RESERVE_S = 5.0
#: A claim outlives its invocation by this margin, then another delivery may take it.
LEASE_MARGIN_S = 30


class RecordFailed(TasklaneError):
    """Raised for a record that must come back (retry, busy, out of time, no DLQ for poison)."""

    code = "record_failed"


class ClaimCheckProcessor(BatchProcessor):
    """An SQS batch processor that claims the batch's tasks before running them."""

    def __init__(self, executor: Executor, config: Settings) -> None:
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)
        self.executor = executor
        self.config = config
        self.plan: dict[str, Attempt | Verdict | Exception] = {}

    def _prepare(self) -> None:
        super()._prepare()
        self.plan = {}
        pointers: dict[str, Pointer] = {}
        for raw in self.records:
            record = SQSRecord(raw)
            try:
                message = codec.decode(record.body)
                pointers[record.message_id] = Pointer(message.task, message.claim_check)
            except MessageDecodeError as exc:
                self.plan[record.message_id] = Verdict(Outcome.POISON, str(exc))
        try:
            steps = self.executor.claim(
                list(pointers.values()), self._lease_seconds(), self._deadline()
            )
        except StoreUnavailable as exc:
            logger.warning("database unavailable, returning the batch", extra={"error": str(exc)})
            self.plan.update(dict.fromkeys(pointers, exc))
            return
        self.plan.update(zip(pointers, steps, strict=True))

    def _remaining_s(self) -> float | None:
        """Seconds left in this invocation (None outside Lambda, e.g. a direct call)."""
        context = getattr(self, "lambda_context", None)
        return None if context is None else context.get_remaining_time_in_millis() / 1000

    def _lease_seconds(self) -> float:
        """A claim outlives its invocation by a margin; after that, another delivery may take it."""
        remaining = self._remaining_s()
        return self.config.lease_seconds if remaining is None else remaining + LEASE_MARGIN_S

    def handle_record(self, record: SQSRecord) -> str:
        step = self.plan[record.message_id]
        if isinstance(step, Exception):
            raise RecordFailed(str(step))
        if isinstance(step, Attempt):
            if self._out_of_time():
                logger.warning(
                    "too little time left, returning the record", extra=task_fields(step.id)
                )
                self.executor.store.release(step.id, step.number)  # the attempt never ran
                raise RecordFailed("invocation out of time")
            step = self.executor.run(step, self._deadline())
        return self._settle(record, step)

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
            if broker.dead_letter(record.body, Lane.LAMBDA, verdict.reason, self.config):
                return verdict.outcome.value  # now in the DLQ: delete it here
            raise RecordFailed(f"poison: {verdict.reason}")
        if verdict.outcome is Outcome.RETRY and verdict.retry_in is not None:
            self._back_off(record, verdict.retry_in)
        raise RecordFailed(f"{verdict.outcome}: {verdict.reason}")

    def _back_off(self, record: SQSRecord, seconds: int) -> None:
        """Make the failed message visible again after ``seconds`` (exponential back-off)."""
        url = self.config.lambda_queue_url
        if not url or queue_name(url) != record.queue_url.rsplit("/", 1)[-1]:
            return
        try:
            broker.change_visibility(url, record.receipt_handle, seconds)
        except Exception as exc:  # back-off is best effort: the queue's timeout still applies
            logger.warning("could not set back-off", extra={"error": str(exc)})


def handle(event: dict, context: Any, executor: Executor | None = None) -> dict:
    """Process one SQS event from the lambda lane's queue; the consumer function's whole job."""
    if executor is None:
        from tasklane.service import default_store

        executor = Executor(default_store())
    processor = ClaimCheckProcessor(executor, settings())
    return process_partial_response(
        event=event, record_handler=processor.handle_record, processor=processor, context=context
    )
