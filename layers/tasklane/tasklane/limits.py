"""Concurrency limits: at most N runs of a task at once, in all or per key, across every
consumer and worker.

``@task(concurrency=5)`` allows five runs of the task at once in both lanes together, however
many Lambda consumers and Celery workers there are; ``concurrency_key="account"`` (payload
fields, or a function of the payload: :mod:`tasklane.keys`) makes that five per account. The
key is made when a task is submitted and stored with it; the limit is the consumer's
declaration, read when it claims.

Postgres enforces it at the claim: the claim takes a transaction lock on the task's name and
key, then claims only while fewer than N of its namesakes with that key are running with a
live lease (a run whose process died stops counting when its lease runs out). A delivery over
the limit is not a run: no attempt is spent, the task stays ``queued`` with why it waits
(``concurrency 5/5 for account=42``), and it is offered again a moment later as a fresh
message (:meth:`tasklane.executor.Executor.claim`). Pure declarations here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tasklane.errors import ConfigurationError
from tasklane.keys import KeyFunction, KeySource, declared_source, key_of

#: How long a delivery over a limit waits before its task is offered again, at most (seconds;
#: from 1 up to this, at random, so the deferred do not all come back at once).
DEFER_MAX_S = 3


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` runs at once, of the task or (with ``key``) of each of its keys."""

    limit: int
    key: KeySource | None = None

    def key_of(self, payload: Any) -> str | None:
        """The key of ``payload`` (None: the limit is the task's, whole)."""
        return None if self.key is None else key_of(self.key, payload, "concurrency_key")

    def waiting(self, running: int, key: str | None) -> str:
        """Why a task over the limit waits, as the console shows it."""
        return f"concurrency {running}/{self.limit}" + (f" for {key}" if key else "")


def declared_concurrency(
    task: str, limit: int | None, key: str | Iterable[str] | KeyFunction | None
) -> Concurrency | None:
    """A task's ``concurrency`` and ``concurrency_key`` as declared, checked now."""
    if limit is None:
        if key is not None:
            raise ConfigurationError(f"task {task!r}: concurrency_key needs a concurrency")
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"task {task!r}: concurrency must be a whole number, 1 or more")
    return Concurrency(
        limit, None if key is None else declared_source(task, "concurrency_key", key)
    )
