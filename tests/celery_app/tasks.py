"""Celery tasks written as for any Celery app: positional and keyword arguments, @app.task and
@shared_task. Nothing in them knows about tasklane but one option of ``single``."""

from __future__ import annotations

import time
from datetime import datetime

from celery import shared_task

from tests.celery_app import app


@app.task
def add(x, y):
    return x + y


@shared_task(name="proj.measure")
def measure(data, *, repeat=1, since=None):
    """A heavy one: multi-megabyte arguments, a keyword, a datetime as Celery encodes it."""
    return {
        "chars": len(data) * repeat,
        "since_type": type(since).__name__,
        "since_year": since.year if isinstance(since, datetime) else None,
    }


@app.task(lane="lambda")
def shout(text, punctuation="!"):
    return text.upper() + punctuation


@app.task(bind=True)
def flaky(self, marker):
    """Asks for a retry on its first run (Celery's self.retry()), succeeds on the next."""
    from pathlib import Path

    path = Path(marker)
    runs = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs == 1:
        raise self.retry(countdown=1)
    return runs


@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    """A chord's body: the header's results, in order."""
    return sum(numbers)


@app.task
def boom(message):
    raise ValueError(message)


@app.task
def on_error(request, exc, traceback, marker):
    """An errback (``link_error``): Celery calls it with the failed task's request."""
    from pathlib import Path

    Path(marker).write_text(f"{request.id} {type(exc).__name__}")


@app.task(ignore_result=True)
def fire_and_forget(marker):
    from pathlib import Path

    Path(marker).write_text("ran")


@app.task(bind=True)
def count_runs(self, marker):
    """Appends one line a run: how many times a message's task ran."""
    with open(marker, "a") as out:
        out.write(f"{self.request.id}\n")
    return "ran"


@app.task
def slow_member(x, marker, seconds=0.0):
    """A chord member that takes a while (a worker can be killed during it)."""
    import time

    with open(marker, "a") as out:
        out.write(f"member {x}\n")
    time.sleep(seconds)
    return x


@app.task
def chord_body(results, marker):
    """A chord's body: one line a run, so a test counts how many times it ran."""
    with open(marker, "a") as out:
        out.write(f"body {sorted(results)}\n")
    return sum(results)


@app.task(rate_limit="2/s")
def paced(n):
    """Celery's rate_limit: with tasklane, two a second across every worker."""
    return n


@app.task(concurrency=1)
def single(seconds):
    """tasklane's concurrency limit on an adopted task: one at a time, all workers together."""
    time.sleep(seconds)
    return seconds
