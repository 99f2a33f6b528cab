"""The benchmarks' tasks: trivial work, so the figures measure tasklane, not the task."""

from tasklane import task


@task(name="bench.noop", lane="lambda")
def noop(payload):
    return None


@task(name="bench.noop_celery", lane="celery")
def noop_celery(payload):
    return None


@task(name="bench.size", lane="lambda")
def size(payload):
    return {"bytes": len(payload["data"])}


@task(name="bench.unique", lane="lambda", unique_key=("key",))
def unique(payload):
    return None


@task(name="bench.limited", lane="lambda", concurrency=1000, concurrency_key="key")
def limited(payload):
    return None


@task(name="bench.rated", lane="lambda", rate_limit=1000)
def rated(payload):
    return None
