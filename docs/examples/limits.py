"""Concurrency limits (docs/python.md). The tests run this file eagerly."""

# --8<-- [start:concurrency]
from tasklane import task


@task(name="crm.sync", concurrency=5, concurrency_key="account")  # 5 at once per account
def sync(payload):
    return {"synced": payload["account"]}


@task(name="reports.heavy", lane="celery", concurrency=2)  # 2 at once, all workers together
def heavy(payload):
    return {"rows": len(payload["rows"])}


# --8<-- [end:concurrency]

synced = sync.delay({"account": 42})
