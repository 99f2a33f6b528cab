"""The store: Postgres, the record of every task, and the conditional updates that move a task
through its life.

Each transition is a single conditional ``UPDATE``, so a race between two deliveries, two
reconcilers or a retry and a consumer is decided by the database, not by timing: the status
(and, for a running task, the attempt number that holds the claim) is part of every ``WHERE``.
Payloads and results arrive here already serialized to JSON text and are cast to ``jsonb`` in
SQL, so a multi-megabyte payload is serialized exactly once.

One module per part of a task's life, each with its SQL next to the code that runs it:

- :mod:`~tasklane.store.tables`: the tables; :mod:`~tasklane.store.records`: the values the
  store takes and gives; :mod:`~tasklane.store.sql`: the SQL the parts share;
- :mod:`~tasklane.store.submission`: new tasks, their keys, the mark that their message is out;
- :mod:`~tasklane.store.claims`: a delivery's claim, its lease and the outcome it settles;
- :mod:`~tasklane.store.waiting`: a task that is not running: deferred, expired, cancelled;
- :mod:`~tasklane.store.workflows`: a workflow's rows and the release of its steps;
- :mod:`~tasklane.store.schedules`: what is due, and each periodic schedule's last tick;
- :mod:`~tasklane.store.maintenance`: retries, the stale rescue, the retention prune;
- :mod:`~tasklane.store.listing`: a task by id, pages of tasks, the operator's figures;
- :mod:`~tasklane.store.workers`: Celery workers' heartbeats, each lane's running tasks.

:class:`TaskStore` is all of them on one engine: what the rest of tasklane holds.
"""

from __future__ import annotations

import functools

from tasklane.config import settings
from tasklane.store.base import StoreBase
from tasklane.store.claims import Claims, ended_history
from tasklane.store.listing import Listing, find_statement
from tasklane.store.maintenance import Maintenance
from tasklane.store.records import (
    Claim,
    Claimed,
    Failure,
    KeyUse,
    NewTask,
    NotClaimed,
    Settled,
    TaskFilter,
    TaskRecord,
)
from tasklane.store.schedules import Schedules
from tasklane.store.sql import STOPPED, TERMINAL_NAMES, JsonText, sqlstate
from tasklane.store.submission import Submissions
from tasklane.store.tables import (
    celery_chord_parts,
    celery_groups,
    idempotency_keys,
    metadata,
    schedules,
    tasks,
    workflows,
)
from tasklane.store.waiting import Waiting
from tasklane.store.workers import Workers
from tasklane.store.workflows import Workflows

__all__ = [
    "STOPPED",
    "TERMINAL_NAMES",
    "Claim",
    "Claimed",
    "Failure",
    "JsonText",
    "KeyUse",
    "NewTask",
    "NotClaimed",
    "Settled",
    "TaskFilter",
    "TaskRecord",
    "TaskStore",
    "celery_chord_parts",
    "celery_groups",
    "default_store",
    "ended_history",
    "find_statement",
    "idempotency_keys",
    "metadata",
    "schedules",
    "sqlstate",
    "tasks",
    "workflows",
]


class TaskStore(
    Submissions, Claims, Waiting, Workflows, Schedules, Maintenance, Listing, Workers, StoreBase
):
    """Every part of the store on one engine (:class:`~tasklane.store.base.StoreBase`)."""


@functools.cache
def default_store() -> TaskStore:
    """This process's store, made once on its engine (a Lambda reuses it across invocations)."""
    from tasklane.database import engine

    config = settings()
    return TaskStore(engine(), config.max_payload_bytes, config.max_result_bytes)
