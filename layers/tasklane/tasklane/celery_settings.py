"""Celery settings for workers on SQS, and why (no side effects: safe to import anywhere).

- acks late, never on failure: a failed attempt's message returns after its visibility timeout
  and reaches the DLQ after ``maxReceiveCount``; a killed worker's message is redelivered;
- prefetch 1: one worker does not hoard invisible messages;
- JSON only: no other serializer is ever accepted;
- no remote control or events: on SQS they would create pidbox and reply queues.
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
