"""Workflows (docs/workflows.md). The tests run this file eagerly."""

# --8<-- [start:tasks]
from tasklane import chain, chord, group, task


@task(name="images.resize")
def resize(payload):
    return {"image": payload["image"], "bytes": 1000 + len(payload["image"])}


@task(name="images.index", lane="celery")  # lanes mix freely
def index(payload):
    return {"images": len(payload), "bytes": sum(r["bytes"] for r in payload)}


@task(name="reports.publish")
def publish(payload):
    return {"published": payload["payload"]["title"], "images": payload["previous"]["images"]}


# --8<-- [end:tasks]

# --8<-- [start:submit]
images = ["a.png", "b.png", "c.png"]
fan_in = chord([resize.s({"image": i}) for i in images], index.s())  # index gets a list
workflow = chain(fan_in, publish.s({"title": "daily"}))  # or: fan_in | publish.s(...)
handle = workflow.delay()  # every task stored at once; the resizes sent
handle.status()  # running, succeeded, failed or cancelled
result = handle.get(timeout=60)  # the last step's result
handle.task_ids  # its tasks, in the order written
# --8<-- [end:submit]

side_by_side = group(resize.s({"image": i}) for i in images).delay()
