"""Celery clients read results from the task table (docs/http-api.md). The tests run it."""

import tasklane

task_id = str(tasklane.submit("text.wordcount", {"text": "read by Celery"}).id)

# --8<-- [start:client]
from celery import Celery

app = Celery("client", broker="sqs://", backend="tasklane.results.TaskTableBackend")
# with DATABASE_URL (or DATABASE_SECRET_ARN) in the environment
result = app.AsyncResult(task_id)  # the id POST /tasks returned
result.state  # PENDING, RETRY, STARTED, SUCCESS or FAILURE
value = result.get(timeout=30)  # the result, or raises the task's own exception
# --8<-- [end:client]
