"""An SQS event source mapping, emulated: what Lambda's poller does for a function on a queue.

Long-polls the queue, gathers a batch (``BatchSize``, ``MaximumBatchingWindowInSeconds``), invokes
the handler with a real SQS event and a context holding the function's deadline, and deletes:

- with ``ReportBatchItemFailures``: every record not named in ``batchItemFailures``;
- without it: the whole batch if the handler returned, nothing if it raised (the response body
  is ignored, as AWS ignores it);
- nothing at all when the invocation raised or ran past the function's ``Timeout``.

Records not deleted become visible again when their visibility timeout runs out, and SQS's own
redrive policy moves them to the DLQ after ``maxReceiveCount`` receives.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tasklane.local.events import LambdaContext, sqs_event
from tasklane.local.functions import Handler
from tasklane.logs import logger

SQS_RECEIVE_MAX = 10
SQS_DELETE_MAX = 10


@dataclass
class InvocationResult:
    records: int
    deleted: int
    failed_ids: list[str] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False


@dataclass
class SqsEventSource:
    client: Any
    queue_url: str
    queue_arn: str
    handler: Handler
    function_name: str = "function"
    batch_size: int = 10
    batching_window: float = 0.0
    report_batch_item_failures: bool = False
    timeout: float = 3.0
    memory_mb: int = 128
    region: str = "us-east-1"
    poll_wait: int = 1
    #: The executor outlives timed-out invocations (a thread cannot be killed; their result is
    #: thrown away, as Lambda throws away a timed-out container).
    _pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(4), repr=False
    )

    def gather(self) -> list[dict]:
        """One batch: long-poll until the batch is full or the batching window has passed."""
        messages: dict[str, dict] = {}  # by MessageId: a message seen again keeps its newest handle
        deadline = time.monotonic() + self.batching_window
        while len(messages) < self.batch_size:
            remaining = deadline - time.monotonic()
            wait = self.poll_wait if not messages else max(0, min(self.poll_wait, int(remaining)))
            got = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, self.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.update((m["MessageId"], m) for m in got)
            if not messages or time.monotonic() >= deadline:
                break
            if not got and wait == 0:
                time.sleep(min(0.05, max(0.0, remaining)))
        return list(messages.values())

    def invoke(self, messages: list[dict]) -> InvocationResult:
        """Invoke the handler with these messages and settle them as Lambda would."""
        event = sqs_event(messages, self.queue_arn, self.region)
        context = LambdaContext(
            function_name=self.function_name,
            timeout_seconds=self.timeout,
            memory_limit_in_mb=self.memory_mb,
            region=self.region,
        )
        future = self._pool.submit(self.handler, event, context)
        try:
            # A moment of grace: a handler that enforces the deadline itself reports it first.
            response = future.result(timeout=self.timeout + 1)
        except TimeoutError:
            logger.warning(
                "invocation timed out, its batch returns to the queue",
                extra={"function": self.function_name, "records": len(messages)},
            )
            return InvocationResult(len(messages), 0, timed_out=True, error="timeout")
        except Exception as exc:  # the handler raised: nothing is deleted
            logger.warning(
                "invocation failed, its batch returns to the queue",
                extra={"function": self.function_name, "error": repr(exc)},
            )
            return InvocationResult(len(messages), 0, error=repr(exc))

        if self.report_batch_item_failures:
            failed = self._failed_ids(response, messages)
            if failed is None:  # an invalid response fails the whole batch, as in AWS
                return InvocationResult(len(messages), 0, error="invalid batchItemFailures")
        else:
            failed = []
        keep = set(failed)
        done = [m for m in messages if m["MessageId"] not in keep]
        self._delete(done)
        return InvocationResult(len(messages), len(done), failed_ids=failed)

    @staticmethod
    def _failed_ids(response: Any, messages: list[dict]) -> list[str] | None:
        if response is None:
            return []
        if not isinstance(response, dict):
            return None
        items = response.get("batchItemFailures") or []
        known = {m["MessageId"] for m in messages}
        ids = []
        for item in items:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not ident or ident not in known:
                return None
            ids.append(ident)
        return ids

    def _delete(self, messages: list[dict]) -> None:
        for start in range(0, len(messages), SQS_DELETE_MAX):
            chunk = messages[start : start + SQS_DELETE_MAX]
            self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )

    def poll_once(self) -> InvocationResult | None:
        messages = self.gather()
        return self.invoke(messages) if messages else None

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; errors of the poller itself are logged and retried."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:
                logger.warning(
                    "event source poll failed",
                    extra={"function": self.function_name, "error": repr(exc)},
                )
                stop.wait(1)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def queue_source(
    client: Any,
    url: str,
    handler: Handler,
    function_name: str = "consumer",
    timeout: float = 30,
    **options: Any,
) -> SqsEventSource:
    """An event source on the queue ``url`` calling ``handler`` in this process, reporting
    partial batch failures (as the template's SQS event sources do)."""
    from tasklane.local.events import queue_arn

    return SqsEventSource(
        client,
        url,
        queue_arn(url.rsplit("/", 1)[-1]),
        handler,
        function_name=function_name,
        report_batch_item_failures=True,
        timeout=timeout,
        **options,
    )
