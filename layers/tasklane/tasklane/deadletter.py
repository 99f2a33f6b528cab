"""Dead letters: a task whose message reached a dead-letter queue ends ``failed`` in Postgres.

The message itself carries only the task id; its last error is already in the task's row, so the
row keeps it (or, for a task that never ran, records why it died).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from tasklane import codec, metrics
from tasklane.broker import REASON_ATTRIBUTE
from tasklane.errors import MessageDecodeError
from tasklane.logs import logger, task_fields
from tasklane.store import TaskStore


def record_dead(record: SQSRecord, store: TaskStore) -> str:
    reason = (record.message_attributes.get(REASON_ATTRIBUTE) or {}).get("stringValue")
    try:
        message = codec.decode(record.body)
        task_id = message.claim_check
    except MessageDecodeError as exc:
        logger.error(
            "undecodable dead letter dropped",
            extra={"message_id": record.message_id, "reason": reason or str(exc)},
        )
        return "undecodable"
    error = {
        "type": "DeadLetter",
        "message": reason or "the task's message reached the dead-letter queue",
    }
    if reason is None and store.requeue_unstarted(task_id):  # died of the platform, not itself
        logger.warning(
            "dead letter of a task that never ran: pending again",
            extra=task_fields(task_id, message.task),
        )
        return "requeued"
    lane = store.mark_dead(task_id, error)
    if lane is not None:
        metrics.count(metrics.FAILED, lane)
    logger.warning(
        "task dead-lettered",
        extra=task_fields(task_id, message.task, marked_failed=lane is not None, reason=reason),
    )
    return "failed" if lane is not None else "already-final"


def handle(event: dict, context: Any, store: TaskStore | None = None) -> dict:
    """Process an SQS batch from a dead-letter queue; the dead-letter function's whole job."""
    if store is None:
        from tasklane.service import default_store

        store = default_store()
    processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(
        event=event,
        record_handler=lambda record: record_dead(record, store),
        processor=processor,
        context=context,
    )
