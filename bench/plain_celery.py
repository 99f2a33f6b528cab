"""A plain Celery app with the same broker and worker settings as tasklane's celery lane, for
comparison: ``celery -A bench.plain_celery worker -Q <queue>``."""

import os

from celery import Celery
from tasklane.celery_settings import SQS_POLLING, SQS_WORKER_SETTINGS

queue_url = os.environ["CELERY_QUEUE_URL"]
queue = queue_url.rsplit("/", 1)[-1]

app = Celery("plain")
app.conf.update(
    broker_url="sqs://",
    broker_transport_options={
        "region": "us-east-1",
        **SQS_POLLING,
        "predefined_queues": {queue: {"url": queue_url}},
    },
    task_default_queue=queue,
    **SQS_WORKER_SETTINGS,
)


@app.task(name="bench.noop_celery")
def noop_celery(task_id):
    return None
