"""kombu's SQS transport, with one hole closed: a body no JSON decoder survives.

kombu decodes every received body as it arrives, catching only ``JSONDecodeError``. A body
nested a few thousand levels deep (10 KB is enough) raises ``RecursionError`` there instead,
which escapes to the worker's event loop and stops the worker ("Unrecoverable error"); every
worker that receives the message after it stops too, until SQS dead-letters it. Here such a
body decodes to nothing, as an invalid one does, so Celery's consumer treats it as undecodable
and :class:`tasklane.worker.DeadLetteringConsumer` moves it to the DLQ at once.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import SQS

from tasklane.logs import logger


class Channel(SQS.Channel):
    def _prepare_json_payload(self, text: str) -> Any:
        try:
            return super()._prepare_json_payload(text)
        except RecursionError:
            logger.error("a message nested too deeply to decode: treated as undecodable")
            return {}


class Transport(SQS.Transport):
    Channel = Channel
