"""Celery settings for workers on SQS, and why (no side effects: safe to import anywhere).

- acks late, never on failure: a failed attempt's message returns after its visibility timeout
  and reaches the DLQ after ``maxReceiveCount``; a killed worker's message is redelivered;
- prefetch 1: one worker does not hoard invisible messages;
- JSON only: no other serializer is ever accepted;
- no remote control or events: on SQS they would create pidbox and reply queues;
- polling (``SQS_POLLING``): see there.
"""

#: Used by tasklane's worker and by the benchmarks' plain Celery app alike.
SQS_WORKER_SETTINGS = {
    "broker_connection_retry_on_startup": True,
    "task_serializer": "json",
    "accept_content": ["json"],
    "result_serializer": "json",
    "task_ignore_result": True,
    "task_acks_late": True,
    "task_acks_on_failure_or_timeout": False,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "worker_enable_remote_control": False,
    "worker_send_task_events": False,
    "task_send_sent_event": False,
    "worker_hijack_root_logger": False,
    "worker_cancel_long_running_tasks_on_connection_loss": True,
    "worker_soft_shutdown_timeout": 10.0,
}

#: kombu's SQS transport options for receiving. ``wait_time_seconds``: long polling, so an idle
#: worker asks SQS every 10 s, not every ``polling_interval``. ``polling_interval``: also how
#: long kombu waits to look again when every prefetch slot is busy (a local check, no request),
#: which caps a worker at about ``concurrency / polling_interval`` tasks a second: 10/s for two
#: processes at kombu's 0.2 s, 40/s at 0.05 s. 0 would spin while the slots are busy.
SQS_POLLING = {"wait_time_seconds": 10, "polling_interval": 0.05}
