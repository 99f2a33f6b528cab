"""SQS I/O: sending claim-check messages, dead-lettering poison, extending visibility.

The client is created once per process on first use. Endpoints come only from boto3's own
configuration (``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL``), which is how the local stack and
the tests point it at moto.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tasklane import codec
from tasklane.config import Settings
from tasklane.lanes import Lane, dead_letter_url, queue_name, queue_url
from tasklane.logs import logger, task_fields

SEND_BATCH_MAX = 10  # SQS SendMessageBatch limit
MAX_DELAY_S = 900  # SQS DelaySeconds limit
SEND_CONCURRENCY = 8  # SendMessageBatch calls in flight for one submission
REASON_ATTRIBUTE = "tasklane-dead-letter-reason"


@functools.cache
def sqs() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs",
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=3,
            read_timeout=25,
        ),
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: uuid.UUID
    task: str
    lane: Lane
    #: Seconds before SQS lets a consumer see the message (at most :data:`MAX_DELAY_S`).
    delay: int = 0
    #: Its priority: from :data:`tasklane.lanes.HIGH_PRIORITY` on, the lane's high queue.
    priority: int = 0


def _origin() -> str:
    # Per call, not per import: Celery workers fork after import.
    return f"gen{os.getpid()}@{socket.gethostname()}"


def message_body(task: str, task_id: uuid.UUID, routing_key: str) -> str:
    origin = _origin()
    return codec.encode(
        task,
        str(task_id),
        routing_key=routing_key,
        origin=origin,
        reply_to=str(uuid.uuid3(uuid.NAMESPACE_OID, origin)),
        delivery_tag=str(uuid.uuid4()),
    )


def _chunks(items: Sequence[Outgoing], size: int) -> Iterable[Sequence[Outgoing]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def publish(outgoing: Sequence[Outgoing], config: Settings) -> set[uuid.UUID]:
    """Send one message per task with SendMessageBatch; returns the ids SQS accepted.

    A batch's SendMessageBatch calls (10 messages each) run side by side. A failed send is
    logged and left out of the result: its task stays ``pending`` in Postgres and the
    reconciler sends it later, so nothing is lost between the commit and the send.
    """
    chunks: list[tuple[Lane, str, Sequence[Outgoing]]] = []
    by_queue: dict[tuple[Lane, str], list[Outgoing]] = {}
    for item in outgoing:
        by_queue.setdefault((item.lane, queue_url(item.lane, config, item.priority)), []).append(
            item
        )
    for (lane, url), items in by_queue.items():
        chunks += [(lane, url, chunk) for chunk in _chunks(items, SEND_BATCH_MAX)]
    if len(chunks) == 1:
        return _send_chunk(*chunks[0])
    sent: set[uuid.UUID] = set()
    for accepted in _pool().map(lambda c: _send_chunk(*c), chunks):
        sent |= accepted
    return sent


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=SEND_CONCURRENCY, thread_name_prefix="sqs-send")


def _send_chunk(lane: Lane, url: str, chunk: Sequence[Outgoing]) -> set[uuid.UUID]:
    from botocore.exceptions import BotoCoreError, ClientError

    routing_key = queue_name(url)
    entries = [
        {"Id": str(i), "MessageBody": message_body(o.task, o.id, routing_key)}
        | ({"DelaySeconds": o.delay} if o.delay else {})
        for i, o in enumerate(chunk)
    ]
    try:
        response = sqs().send_message_batch(QueueUrl=url, Entries=entries)
    except (BotoCoreError, ClientError) as exc:
        logger.warning("send failed, tasks stay pending", extra={"lane": lane, "error": str(exc)})
        return set()
    for bad in response.get("Failed", []):
        item = chunk[int(bad["Id"])]
        logger.warning(
            "send refused, task stays pending",
            extra=task_fields(item.id, item.task, error=bad.get("Message")),
        )
    return {chunk[int(ok["Id"])].id for ok in response.get("Successful", [])}


def dead_letter(body: str, lane: Lane, reason: str, config: Settings) -> bool:
    """Move a poison message to the lane's DLQ at once; False when no DLQ is configured."""
    url = dead_letter_url(lane, config)
    if not url:
        return False
    sqs().send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes={REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]}},
    )
    return True


def change_visibility(queue: str, receipt_handle: str, seconds: int) -> None:
    sqs().change_message_visibility(
        QueueUrl=queue, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
    )


def waiting_messages(url: str) -> int:
    """How many messages wait in a queue, visible to a consumer now (approximate)."""
    attributes = sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


@functools.lru_cache(maxsize=16)
def queue_visibility(url: str) -> int:
    """A queue's VisibilityTimeout (read once per process): how long a received message hides."""
    attributes = sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    return int(attributes["Attributes"]["VisibilityTimeout"])
