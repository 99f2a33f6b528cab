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


# --8<-- [start:rate]
@task(name="maps.geocode", rate_limit="600/m")  # the provider's quota, shared by all consumers
def geocode(payload):
    return {"address": payload["address"]}


@task(name="mail.send", rate_limit="1/s", rate_limit_key="domain")  # one a second per domain
def send(payload):
    return {"sent": payload["to"]}


# --8<-- [end:rate]


# --8<-- [start:ordering]
@task(name="ledger.post", ordering_key="account")  # one at a time per account, in order
def post(payload):
    return {"posted": payload["entry"]}


first = post.delay({"account": 7, "entry": "open"})
then = post.delay({"account": 7, "entry": "deposit"})  # waits for "open", unsent
# --8<-- [end:ordering]


# --8<-- [start:priority]
@task(name="alerts.page", priority=9)  # 0 to 9; from 5 on, the lane's high-priority queue
def page(payload):
    return {"paged": payload["who"]}


paged = page.delay({"who": "on-call"})
resized = sync.apply_async({"account": 1}, priority=7)  # a call's own priority
# --8<-- [end:priority]

synced = sync.delay({"account": 42})
mailed = send.delay({"to": "ada@example.com", "domain": "example.com"})
