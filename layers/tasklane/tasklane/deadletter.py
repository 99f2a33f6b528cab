"""Dead letters: what a message that reached a dead-letter queue means for its task.

The message carries only the task id; its last error is already in the task's row, so the row
keeps it. SQS keeps a message's id when it moves it to a DLQ, and every claim records the
message it came from, so a dead letter fails a task only when it is the message that carried
the task's attempts: a duplicate that exhausted its receives while another delivery held the
task changes nothing (:meth:`TaskStore.mark_dead`).
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
from tasklane.lifecycle import Status
from tasklane.logs import logger, task_fields
from tasklane.store import TaskStore, default_store

#: How often a task that never ran is put back to pending before its dead letter fails it.
MAX_REQUEUES = 3


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
    fields = task_fields(task_id, message.task)
    if reason is not None:
        # tasklane dead-lettered it as poison at once: the message is wrong (no row, another
        # task's name), not the task its id points at, which keeps its own messages
        logger.warning("poison message dead-lettered", extra=fields | {"reason": reason})
        return "poison"
    error = {"type": "DeadLetter", "message": "the task's message reached the dead-letter queue"}
    marked = store.mark_dead(task_id, record.message_id, error, MAX_REQUEUES)
    if marked is None:
        logger.info("dead letter of a duplicate or of a finished task", extra=fields)
        return "unchanged"
    status, lane = marked
    if status is Status.FAILED:
        metrics.count(metrics.FAILED, lane)
    logger.warning("task dead-lettered", extra=fields | {"now": status})
    return str(status)


def handle(event: dict, context: Any, store: TaskStore | None = None) -> dict:
    """Process an SQS batch from a dead-letter queue; the dead-letter function's whole job."""
    if store is None:
        store = default_store()
    processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    return process_partial_response(
        event=event,
        record_handler=lambda record: record_dead(record, store),
        processor=processor,
        context=context,
    )
