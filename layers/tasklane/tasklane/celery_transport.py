"""kombu's SQS transport, with three holes closed: two bodies and a requeue that stop a worker.

Anything that escapes kombu's and Celery's handling of a received message stops the worker
("Unrecoverable error"), and every worker that receives the message after it, until SQS
dead-letters it:

- kombu decodes every body as it arrives, catching only ``JSONDecodeError``: a body nested a
  few thousand levels deep (10 KB is enough) raises ``RecursionError`` instead;
- Celery looks the ``task`` header up in a dict, catching only ``KeyError``: a header that is
  an object or a list raises ``TypeError``.

Here such a body decodes to nothing, as an invalid one does, so Celery's consumer treats it as
undecodable and :class:`tasklane.worker.DeadLetteringConsumer` moves it to the DLQ at once.

- a message requeued (a task's ``Reject(requeue=True)``) whose task has a back-off policy:
  kombu restores it, then applies the policy to the SQS message the restore has dropped from
  it (``KeyError: 'sqs_message'``). A restored message needs no back-off; here it gets none.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import SQS, virtual

from tasklane.logs import logger


class QoS(SQS.QoS):
    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:  # restored, as kombu restores any message: no back-off to apply
            virtual.QoS.reject(self, delivery_tag, requeue=True)
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(SQS.Channel):
    QoS = QoS

    def _prepare_json_payload(self, text: str) -> Any:
        try:
            payload = super()._prepare_json_payload(text)
        except RecursionError:
            logger.error("a message nested too deeply to decode: treated as undecodable")
            return {}
        headers = payload.get("headers")
        if headers is not None and not _names_a_task(headers):
            logger.error("a message whose task or id header is not text: treated as undecodable")
            return {}
        return payload


def _names_a_task(headers: Any) -> bool:
    """Protocol 2's headers name the task and its id as text (or leave them out)."""
    return isinstance(headers, dict) and all(
        isinstance(headers.get(key, ""), str) for key in ("task", "id")
    )


class Transport(SQS.Transport):
    Channel = Channel
