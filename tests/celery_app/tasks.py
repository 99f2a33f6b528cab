"""Celery tasks written as for any Celery app: positional and keyword arguments, @app.task and
@shared_task. Nothing in them knows about tasklane."""

from __future__ import annotations

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
