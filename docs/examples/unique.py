"""Unique tasks (docs/python.md). The tests run this file eagerly."""

# --8<-- [start:unique]
import tasklane
from tasklane import task


@task(name="reports.rebuild", unique_key=("account",))  # one live rebuild per account
def rebuild(payload):
    return {"account": payload["account"]}


first = rebuild.apply_async({"account": 42}, countdown=60)
again = rebuild.apply_async({"account": 42, "asked_by": "a second click"}, countdown=60)
assert again.id == first.id  # the live one: nothing stored, nothing sent

# a key and a window given with the call: once an hour, whether the first has finished or not
hourly = tasklane.submit("reports.rebuild", {"account": 7}, unique_key="acct-7", unique_for=3600)
assert tasklane.submit("reports.rebuild", {"account": 7}, unique_key="acct-7").id == hourly.id
# --8<-- [end:unique]
