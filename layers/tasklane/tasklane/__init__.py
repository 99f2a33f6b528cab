"""tasklane: durable background tasks on AWS, with Celery-compatible messages.

Write a task once; run it in the ``lambda`` lane (a Lambda function on SQS) or the ``celery``
lane (Celery workers on SQS). Postgres holds every task's payload, status and result; SQS carries
only a Celery protocol-2 message naming the task's id (the claim-check pattern).
"""

from tasklane.registry import task

__all__ = ["task"]
__version__ = "0.1.0"
