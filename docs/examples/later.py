"""Later, periodically, cancelled (docs/python.md). The tests run this file eagerly."""

from datetime import UTC, datetime, timedelta

import tasklane

# --8<-- [start:periodic]
from tasklane import Schedule, task


@task(name="reports.nightly", schedule="cron(0 3 * * ? *)")  # EventBridge syntax, in UTC
def nightly(payload):
    return {"report": "done"}


@task(name="cache.warm", schedule=Schedule("rate(5 minutes)", payload={"all": True}))
def warm(payload):
    return payload


# --8<-- [end:periodic]


# --8<-- [start:cooperative]
@task(name="exports.rows", lane="celery")
def export(payload):
    written = 0
    for chunk in payload["chunks"]:
        tasklane.current_task().check_cancelled()  # raises once a cancel was asked
        written += len(chunk)  # ... write the chunk
    return {"rows": written}


# --8<-- [end:cooperative]


# --8<-- [start:later]
in_ten_minutes = export.apply_async({"chunks": [[1, 2], [3]]}, countdown=600)  # SQS DelaySeconds
next_month = export.apply_async(
    {"chunks": [[1, 2], [3]]}, eta=datetime.now(UTC) + timedelta(days=30)
)
next_month.status()  # Status.SCHEDULED: waits in Postgres; the reconciler sends it when due
in_ten_minutes.cancel()  # Status.CANCELLED: it will never run
# --8<-- [end:later]
