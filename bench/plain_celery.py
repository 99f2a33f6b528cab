"""A plain Celery app with the same broker and worker settings as tasklane's celery lane, for
comparison: ``celery -A bench.plain_celery worker -Q <queue>``."""

import os

from celery import Celery

queue_url = os.environ["CELERY_QUEUE_URL"]
queue = queue_url.rsplit("/", 1)[-1]

app = Celery("plain")
app.conf.update(
    broker_url="sqs://",
    broker_transport_options={
        "region": "us-east-1",
        "wait_time_seconds": 10,
        "polling_interval": 0.2,
        "predefined_queues": {queue: {"url": queue_url}},
    },
    task_default_queue=queue,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_acks_on_failure_or_timeout=False,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop_celery")
def noop_celery(task_id):
    return None
